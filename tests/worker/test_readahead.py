"""Read-ahead against an in-memory S3 object: the pixels GDAL reads are the file's, every
needed byte is fetched once in a few large GETs, and the bytes held stay within the budget."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS

from tiling.blockmap import band_streams
from tiling.grid import Window, tile_grid
from tiling.image import WindowReader
from worker.adapters.s3ranges import S3Objects
from worker.prefetch import HEADER_CHUNK_BYTES
from worker.readahead import ReadAhead, ReadAheadSettings

WIDTH, HEIGHT = 1500, 1100
UTM = CRS.from_epsg(32618)
TRANSFORM = Affine(0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0)


class FakeBody:
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aenter__(self) -> FakeBody:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), size):
            yield self._data[start : start + size]


class FakeS3:
    """HEAD and ranged GET of one object, recording every range asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ranges: list[tuple[int, int]] = []

    async def head_object(self, **_: Any) -> dict[str, Any]:
        return {"ContentLength": len(self.data)}

    async def get_object(self, Range: str, **_: Any) -> dict[str, Any]:
        first, last = (int(v) for v in Range.removeprefix("bytes=").split("-"))
        self.ranges.append((first, last + 1))
        await asyncio.sleep(0.001)
        body = self.data[first : last + 1]
        return {"ContentLength": len(body), "Body": FakeBody(body)}


def pixels(bands: int = 3) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (bands, HEIGHT, WIDTH), dtype=np.uint8)


def write(path: Path, driver: str = "GTiff", **options: Any) -> Path:
    # Georeferenced: two threads opening a plain image at once would race on the warnings
    # filter that hides rasterio's NotGeoreferencedWarning (catch_warnings is not thread-safe).
    profile = {"width": WIDTH, "height": HEIGHT, "count": 3, "dtype": "uint8"}
    with rasterio.open(
        path, "w", driver=driver, crs=UTM, transform=TRANSFORM, **profile, **options
    ) as dst:
        dst.write(pixels())
    return path


def cog(path: Path) -> Path:
    source = write(path.with_suffix(".src.tif"), tiled=True)
    rasterio.shutil.copy(source, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256)
    return path


IMAGES: dict[str, Callable[[Path], Path]] = {
    "tiled": lambda p: write(p, tiled=True),
    "band-interleaved": lambda p: write(p, tiled=True, interleave="band"),
    "strips": write,
    "deflate COG": cog,
    "NITF": lambda p: write(p.with_suffix(".ntf"), "NITF", IC="NC", ICORDS="N"),
    "NITF in row blocks": lambda p: write(
        p.with_suffix(".ntf"),
        "NITF",
        IC="NC",
        ICORDS="N",
        BLOCKYSIZE=256,
    ),
    "NITF blocked S": lambda p: write(
        p.with_suffix(".ntf"),
        "NITF",
        IC="NC",
        ICORDS="N",
        IMODE="S",
        BLOCKXSIZE=512,
        BLOCKYSIZE=512,
    ),
}


def read_all(
    path: Path, s3: FakeS3, windows: list[Window], settings: ReadAheadSettings
) -> tuple[dict[Window, np.ndarray], int, bool]:
    """Every window read by two encoders through the read-ahead; the bytes held at most."""

    async def scenario() -> tuple[dict[Window, np.ndarray], int, bool]:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(2)
        half = -(-len(windows) // 2)
        bands = [windows[:half], windows[half:]]

        @asynccontextmanager
        async def no_client(**_: str) -> AsyncIterator[Any]:
            yield s3

        reader = ReadAhead(S3Objects(cast(Any, s3), no_client), settings)
        found: dict[Window, np.ndarray] = {}
        held = 0

        async def run(*args: Any) -> Any:
            return await loop.run_in_executor(executor, *args)

        async with reader.region(f"s3://b/{path.name}", None, bands, run) as source:

            def lane(band: list[Window]) -> None:
                nonlocal held
                with WindowReader("unused", None, source.path, source.reads.done) as window_reader:
                    for window in band:
                        found[window] = window_reader.read(window)
                        held = max(held, reader._budget.used)

            await asyncio.gather(*(run(lane, band) for band in bands))
            planned = source.plan is not None
            assert source.reads.refetches == 0
        executor.shutdown()
        return found, held, planned

    return asyncio.run(scenario())


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_pixels_come_from_few_large_reads_each_byte_once(kind: str, tmp_path: Path) -> None:
    path = IMAGES[kind](tmp_path / "image.tif")
    data = path.read_bytes()
    s3 = FakeS3(data)
    windows = tile_grid(Window(0, 0, WIDTH, HEIGHT), 512, 128)
    settings = ReadAheadSettings(range_bytes=1 << 20, budget_bytes=3 << 20, requests=2, wait_s=30)
    found, held, planned = read_all(path, s3, windows, settings)

    with WindowReader(str(path)) as direct:
        for window in windows:
            np.testing.assert_array_equal(found[window], direct.read(window))
    assert planned
    header = [
        r for r in s3.ranges if r[1] - r[0] <= HEADER_CHUNK_BYTES and r[0] < HEADER_CHUNK_BYTES
    ]
    planned_reads = sorted(set(s3.ranges) - set(header))
    assert len(planned_reads) == len(s3.ranges) - len(header)  # no planned read twice
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(planned_reads))
    fetched = sum(end - start for start, end in planned_reads)
    assert fetched <= 1.2 * len(data)  # overviews and gaps are not read
    with rasterio.open(path) as src:
        streams = band_streams(src)  # a read per band where bands are stored apart
    assert (streams == 3) == (kind not in {"tiled", "strips", "deflate COG"})
    assert len(planned_reads) <= streams * len(data) // (1 << 20) + 3  # reads of about 1 MiB
    assert held <= (3 << 20) + 2 * (2 << 20)  # the budget, plus what readers waited for


def test_only_the_full_resolution_blocks_of_a_cog_are_read(tmp_path: Path) -> None:
    path = cog(tmp_path / "image.tif")
    with rasterio.open(path) as src:
        first_block = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        assert src.overviews(1)  # overviews lie before the full-resolution blocks
    s3 = FakeS3(path.read_bytes())
    windows = tile_grid(Window(0, 0, WIDTH, HEIGHT), 512, 128)
    settings = ReadAheadSettings(range_bytes=1 << 20, budget_bytes=8 << 20, requests=2, wait_s=30)
    read_all(path, s3, windows, settings)
    beyond_header = [r for r in s3.ranges if r[1] > HEADER_CHUNK_BYTES]
    assert all(start >= first_block - 64 for start, _ in beyond_header)
