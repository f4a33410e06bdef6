"""Tile read + encode throughput: the worker's tiler next to a plain rasterio loop (the floor).

Makes (or reuses, ``--image``) a tiled 10000 x 10000 3-band uint8 UTM GeoTIFF with smooth,
non-constant content, then, for each tile format/compression pair, reads and encodes every tile
of the 512 / 128 grid three ways in the same process, interleaved run by run:

tiler
    The worker's own code path: ``ImagePipeline.plan`` then ``ImagePipeline.run_region`` over
    the image's regions, on a ``ThreadPoolExecutor(encode_threads)`` built as the service builds
    it. That runs the real encoder tasks, ``encode_window`` (``WindowReader.read``: each encoder
    reads a contiguous band of the tiles through its own GDAL handle; then ``encode_tile``) and the
    bounded queue to the endpoint callers. The endpoint is a stub that answers each tile at once
    with an empty FeatureCollection, so the figure also carries the pipeline's own per-tile
    overhead (queue, one ``parse_tile_reply`` of an empty reply on the same pool), which the
    worker pays too. ``_run_tiles`` cannot be driven without an endpoint, so this is the lowest
    layer that still holds the worker's read + encode + threading logic unchanged.
floor, 1 thread
    ``rasterio.open``, then for each grid window ``src.read(window=...)`` and a write of the tile
    into a ``MemoryFile`` with the same driver, compression and georeferencing as the project's
    tile (GTIFF georeferenced; NITF with ICORDS/IGEOLO for WGS84 or UTM; PNG and JPEG without),
    inside one ``rasterio.Env``. GTiff tiles are written directly. PNG, JPEG and NITF tiles are
    written to a MEM dataset and copied with ``rasterio.shutil.copy`` (``--floor-writer copy``,
    the default): NITF JPEG/J2K have no direct Create at all, and the direct ways rasterio offers
    for the others (its buffered CreateCopy for PNG/JPEG, GDAL's NITF Create) hold the GIL for
    much of the encode, so two threads barely beat one; ``--floor-writer direct`` measures them.
floor, 2 threads
    The same loop on two threads, each with its own dataset handle and its own contiguous half of
    the tiles (row-major order).

The target (README: the tiler at >= 90% of the floor, using both cores) is checked against the
faster of the two floors. Figures are tiles per second, median of ``--runs``; "cores" is process
CPU time over wall time. One tile per pair is also encoded both ways and decoded: lossless pairs
must give the source pixels from both.

    python -m benchmarks.tiles [--image PATH] [--size 10000] [--runs 3] [--tile 512]
                               [--overlap 128] [--pairs NITF:J2K,GTIFF:LZW] [--limit K]
                               [--floor-writer copy|direct]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.windows import Window as RioWindow

from tiling.grid import Window
from tiling.image import WindowReader
from worker.contract.messages import VALID_PAIRS, ImageRequest
from worker.images import ImageRef
from worker.pipeline import ImageJob, ImagePipeline, TileProgress
from worker.ports import ModelEndpoint, Sink
from worker.regions import Region
from worker.settings import Settings
from worker.tiles import encode_window

# The valid pairs (README "Tile format and compression pairs").
PAIRS = VALID_PAIRS
LOSSLESS = frozenset({("NITF", "NONE"), ("GTIFF", "NONE"), ("GTIFF", "LZW"), ("PNG", "NONE")})
TARGET = 0.9
EMPTY_REPLY = b'{"type": "FeatureCollection", "features": []}'
RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
IMAGE_CRS = CRS.from_epsg(32618)  # UTM 18N: NITF tiles carry IGEOLO
IMAGE_TRANSFORM = Affine(0.5, 0, 583000, 0, -0.5, 4507000)


# --- the test image ------------------------------------------------------------------------------


def make_image(path: Path, size: int, bands: int = 3, block: int = 512) -> None:
    """A tiled (``block`` px), deflate-compressed UTM GeoTIFF of smooth, varied uint8 content:
    broad gradients, a directional texture, value noise on a 32 px lattice and a little grain,
    different per band, so JPEG, J2K and LZW have real work to do."""
    rng = np.random.default_rng(0)
    cell = 32
    lattice = rng.normal(0.0, 1.0, (bands, size // cell + 2, size // cell + 2))
    phases = rng.uniform(0.0, 2 * math.pi, (bands, 3))
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": bands,
        "dtype": "uint8",
        "crs": IMAGE_CRS,
        "transform": IMAGE_TRANSFORM,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "interleave": "pixel",
        "num_threads": "all_cpus",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for _, window in dst.block_windows(1):
            rows = np.arange(window.row_off, window.row_off + window.height)[:, None]
            cols = np.arange(window.col_off, window.col_off + window.width)[None, :]
            block_pixels = np.empty((bands, window.height, window.width), dtype=np.uint8)
            for band in range(bands):
                phase = phases[band]
                field = (
                    115.0
                    + 45.0
                    * np.sin(2 * math.pi * cols / 1700 + phase[0])
                    * np.cos(2 * math.pi * rows / 1300 + phase[1])
                    + 25.0 * np.sin(2 * math.pi * (0.8 * cols + 0.6 * rows) / 230 + phase[2])
                    + 18.0 * _value_noise(lattice[band], rows / cell, cols / cell)
                    + rng.normal(0.0, 3.0, (window.height, window.width))
                )
                block_pixels[band] = np.clip(field, 0, 255).astype(np.uint8)
            dst.write(block_pixels, window=window)


def _value_noise(
    lattice: npt.NDArray[np.float64], y: npt.NDArray[Any], x: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """Bilinear interpolation of ``lattice`` at rows ``y`` (column vector) and columns ``x``."""
    y0, x0 = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
    fy, fx = y - y0, x - x0
    return np.asarray(
        lattice[y0, x0] * (1 - fy) * (1 - fx)
        + lattice[y0 + 1, x0] * fy * (1 - fx)
        + lattice[y0, x0 + 1] * (1 - fy) * fx
        + lattice[y0 + 1, x0 + 1] * fy * fx
    )


# --- the floor: a plain rasterio loop ------------------------------------------------------------


# The driver and creation options of each pair, as the README's table gives them.
FLOOR_FORMATS: dict[tuple[str, str], tuple[str, tuple[tuple[str, str], ...]]] = {
    ("NITF", "NONE"): ("NITF", (("IC", "NC"),)),
    ("NITF", "JPEG"): ("NITF", (("IC", "C3"),)),
    ("NITF", "J2K"): ("NITF", (("IC", "C8"), ("JPEG2000_DRIVER", "JP2OpenJPEG"))),
    ("GTIFF", "NONE"): ("GTiff", ()),
    ("GTIFF", "JPEG"): ("GTiff", (("COMPRESS", "JPEG"),)),
    ("GTIFF", "LZW"): ("GTiff", (("COMPRESS", "LZW"),)),
    ("PNG", "NONE"): ("PNG", ()),
    ("JPEG", "NONE"): ("JPEG", ()),
    ("JPEG", "JPEG"): ("JPEG", ()),
}
# GDAL's NITF driver cannot Create these: they can only be copied from another dataset.
COPY_ONLY = frozenset({("NITF", "JPEG"), ("NITF", "J2K")})


@dataclass(frozen=True, slots=True)
class FloorRecipe:
    """How the plain loop writes one pair: driver, creation options, and whether it fills a
    MEM dataset and copies it (``rasterio.shutil.copy``) instead of writing the driver."""

    driver: str
    options: tuple[tuple[str, str], ...] = ()
    copy: bool = False


def floor_recipe(pair: tuple[str, str], writer: str) -> FloorRecipe:
    """The plain loop's recipe for ``pair``.

    ``direct`` writes through ``MemoryFile.open`` wherever rasterio can (for PNG and JPEG it
    buffers in MEM and calls CreateCopy itself, holding the GIL); ``copy`` writes every non-GTiff
    tile as MEM + ``rasterio.shutil.copy``, which releases the GIL, so two threads scale.
    """
    driver, options = FLOOR_FORMATS[pair]
    copy = pair in COPY_ONLY or (writer == "copy" and driver != "GTiff")
    return FloorRecipe(driver, options, copy)


def nitf_icords(crs: CRS | None) -> str | None:
    """NITF ICORDS for a CRS NITF can express (G: WGS84 geographic, N/S: UTM), else None."""
    epsg = crs.to_epsg() if crs is not None else None
    if epsg == 4326:
        return "G"
    if epsg is not None and 32601 <= epsg <= 32660:
        return "N"
    if epsg is not None and 32701 <= epsg <= 32760:
        return "S"
    return None


def floor_encode(
    pixels: npt.NDArray[Any], recipe: FloorRecipe, transform: Affine, crs: CRS | None
) -> bytes:
    """Write ``pixels`` as one tile file in memory, the plain rasterio way."""
    bands, height, width = pixels.shape
    profile: dict[str, Any] = {
        "count": bands,
        "height": height,
        "width": width,
        "dtype": pixels.dtype.name,
    }
    options = dict(recipe.options)
    if recipe.driver == "GTiff" and crs is not None:
        profile.update(crs=crs, transform=transform)
    elif recipe.driver == "NITF" and (icords := nitf_icords(crs)) is not None:
        profile.update(crs=crs, transform=transform)
        if not recipe.copy:
            options["ICORDS"] = icords  # Create reserves IGEOLO only when told
    if recipe.copy:
        with rasterio.open("", "w", driver="MEM", **profile) as mem, MemoryFile() as out:
            if bands == len(RGB):
                mem.colorinterp = RGB
            mem.write(pixels)
            rasterio.shutil.copy(mem, out.name, driver=recipe.driver, **options)
            return bytes(out.read())
    if recipe.driver == "NITF" and bands == len(RGB):
        options["IREP"] = "RGB"
    with MemoryFile() as memfile:
        with memfile.open(driver=recipe.driver, **profile, **options) as dst:
            dst.write(pixels)
        return bytes(memfile.read())


def floor_loop(path: str, windows: list[Window], recipe: FloorRecipe) -> int:
    """Read and encode ``windows`` with one dataset handle; the total encoded bytes."""
    total = 0
    with rasterio.Env(), rasterio.open(path) as src:
        for window in windows:
            rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
            pixels = src.read(window=rio_window)
            tile = floor_encode(pixels, recipe, src.window_transform(rio_window), src.crs)
            total += len(tile)
    return total


# --- the tiler: the worker's pipeline with a stub endpoint ---------------------------------------


class NullEndpoint:
    """Answers every tile at once with no detections; counts tiles and payload bytes."""

    def __init__(self) -> None:
        self.tiles = 0
        self.payload_bytes = 0

    async def invoke(self, payload: bytes, content_type: str) -> bytes:
        """Count the tile and answer an empty FeatureCollection."""
        self.tiles += 1
        self.payload_bytes += len(payload)
        return EMPTY_REPLY


class NullEndpoints:
    """The endpoint factory: always the same stub."""

    def __init__(self, endpoint: NullEndpoint) -> None:
        self.endpoint = endpoint

    async def for_request(self, request: ImageRequest) -> ModelEndpoint:
        """The stub endpoint."""
        return self.endpoint


class NoSinks:
    """The sink factory: no outputs (finalise is not run)."""

    async def for_request(self, request: ImageRequest) -> list[Sink]:
        """No outputs."""
        return []


def tile_request(image: str, tile: int, overlap: int, pair: tuple[str, str]) -> ImageRequest:
    """An ImageRequest for one image, grid and encoding."""
    return ImageRequest.model_validate(
        {
            "jobId": f"bench-tiles-{pair[0]}-{pair[1]}".lower(),
            "imageUrls": [image],
            "outputs": [{"type": "S3", "bucket": "benchmark"}],
            "imageProcessor": {"name": "http://localhost/null", "type": "HTTP_ENDPOINT"},
            "imageProcessorTileSize": tile,
            "imageProcessorTileOverlap": overlap,
            "imageProcessorTileFormat": pair[0],
            "imageProcessorTileCompression": pair[1],
        }
    )


def first_tiles(regions: list[Region], limit: int | None) -> list[Region]:
    """The regions cut down to their first ``limit`` tiles (in region order)."""
    if limit is None:
        return regions
    kept, left = [], limit
    for region in regions:
        if left <= 0:
            break
        kept.append(replace(region, tiles=region.tiles[:left]))
        left -= len(kept[-1].tiles)
    return kept


# --- measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed pass over the tiles."""

    tiles: int
    wall_s: float
    cpu_s: float
    payload_bytes: int

    @property
    def rate(self) -> float:
        """Tiles per second."""
        return self.tiles / self.wall_s

    @property
    def cores(self) -> float:
        """Process CPU seconds per wall second."""
        return self.cpu_s / self.wall_s


@contextmanager
def clock(result: list[float]) -> Iterator[None]:
    """Append wall and process CPU seconds of the block to ``result``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    result.extend((time.perf_counter() - wall, time.process_time() - cpu))


@dataclass
class PairBench:
    """The three contenders for one format/compression pair."""

    pipeline: ImagePipeline
    endpoint: NullEndpoint
    job: ImageJob
    regions: list[Region]
    recipe: FloorRecipe

    @property
    def windows(self) -> list[Window]:
        """The tiles, in the order the pipeline takes them."""
        return [window for region in self.regions for window in region.tiles]

    def tiler(self) -> Sample:
        """The worker's regions through the pipeline, one after the other."""
        return asyncio.run(self._tiler())

    async def _tiler(self) -> Sample:
        self.endpoint.tiles = self.endpoint.payload_bytes = 0
        times: list[float] = []
        with clock(times):
            for region in self.regions:
                progress = TileProgress(self.job.job_id, len(region.tiles))
                staged = await self.pipeline.run_region(self.job, region, progress)
                if staged.failed_tiles:
                    raise RuntimeError(f"tile failed: {staged.failed_tiles[0].describe()}")
        return Sample(self.endpoint.tiles, times[0], times[1], self.endpoint.payload_bytes)

    def floor(self, threads: int) -> Sample:
        """The plain loop, over ``threads`` contiguous shares of the tiles."""
        windows = self.windows
        share = -(-len(windows) // threads)
        chunks = [windows[i : i + share] for i in range(0, len(windows), share)]
        times: list[float] = []
        with clock(times):
            if threads == 1:
                total = floor_loop(self.job.url, windows, self.recipe)
            else:
                with ThreadPoolExecutor(threads, thread_name_prefix="floor") as pool:
                    total = sum(
                        pool.map(lambda chunk: floor_loop(self.job.url, chunk, self.recipe), chunks)
                    )
        return Sample(len(windows), times[0], times[1], total)


def check_one_tile(bench: PairBench, pair: tuple[str, str]) -> str:
    """Encode the middle tile both ways, decode both; a one-line verdict."""
    windows = bench.windows
    window = windows[len(windows) // 2]
    rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
    with WindowReader(bench.job.url) as reader:
        ours = encode_window(reader, bench.job.info, window, *pair)
    with rasterio.Env(), rasterio.open(bench.job.url) as src:
        source = src.read(window=rio_window)
        floor = floor_encode(source, bench.recipe, src.window_transform(rio_window), src.crs)
    ours_px, floor_px = decode(ours), decode(floor)
    where = f"tile {len(windows) // 2} (col {window.col_off}, row {window.row_off})"
    same_bytes = "identical" if ours == floor else f"differ ({len(ours)} vs {len(floor)} B)"
    if pair in LOSSLESS:
        ok = np.array_equal(ours_px, source) and np.array_equal(floor_px, source)
        if not ok:
            raise RuntimeError(f"{pair}: {where} does not decode to the source pixels")
        return f"{where}: tiler == floor == source pixels (lossless); bytes {same_bytes}"
    diff = int(np.abs(ours_px.astype(np.int16) - floor_px.astype(np.int16)).max())
    return f"{where}: lossy, max |tiler - floor| = {diff}; bytes {same_bytes}"


def decode(data: bytes) -> npt.NDArray[Any]:
    """The pixels of an encoded tile, read back with plain rasterio."""
    with rasterio.Env(), MemoryFile(data) as memfile, memfile.open() as src:
        return np.asarray(src.read())


# --- running -------------------------------------------------------------------------------------


def parse_pairs(text: str | None) -> list[tuple[str, str]]:
    """``NITF:J2K,GTIFF:LZW`` as pairs; all valid pairs without ``text``."""
    if not text:
        return list(PAIRS)
    pairs = []
    for item in text.split(","):
        fmt, _, comp = item.strip().upper().partition(":")
        pair = (fmt, comp or "NONE")
        if pair not in PAIRS:
            valid = ", ".join(f"{f}:{c}" for f, c in PAIRS)
            raise argparse.ArgumentTypeError(f"unknown pair {item!r}; valid: {valid}")
        pairs.append(pair)
    return pairs


def measure(bench: PairBench, runs: int) -> dict[str, list[Sample]]:
    """``runs`` passes of each contender, in a rotating order, after a short warm-up."""
    contenders: dict[str, Callable[[], Sample]] = {
        "tiler": bench.tiler,
        "floor1": lambda: bench.floor(1),
        "floor2": lambda: bench.floor(2),
    }
    warm = replace(bench, regions=first_tiles(bench.regions, 4))
    for contender in (warm.tiler, lambda: warm.floor(1), lambda: warm.floor(2)):
        contender()
    samples: dict[str, list[Sample]] = {name: [] for name in contenders}
    names = list(contenders)
    for run in range(runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:
            sample = contenders[name]()
            samples[name].append(sample)
            print(
                f"  run {run + 1} {name:6}: {sample.tiles} tiles in {sample.wall_s:6.2f} s,"
                f" {sample.rate:7.1f} tiles/s, {sample.cores:.2f} cores",
                flush=True,
            )
    return samples


def table_row(pair: tuple[str, str], samples: dict[str, list[Sample]]) -> str:
    """A markdown row: medians, the ratio to the best floor, cores and tile sizes."""
    rate = {name: statistics.median(s.rate for s in runs) for name, runs in samples.items()}
    cores = {name: statistics.median(s.cores for s in runs) for name, runs in samples.items()}
    best = "floor1" if rate["floor1"] > rate["floor2"] else "floor2"
    ratio = rate["tiler"] / rate[best]
    cpu_ms = {
        name: statistics.median(1000 * s.cpu_s / s.tiles for s in runs)
        for name, runs in samples.items()
    }
    size = {name: runs[0].payload_bytes / runs[0].tiles / 1024 for name, runs in samples.items()}
    verdict = "ok" if ratio >= TARGET else "BELOW"
    return (
        f"| {pair[0]} | {pair[1]} | {rate['tiler']:.1f} | {rate['floor1']:.1f}"
        f" | {rate['floor2']:.1f} | {ratio:.2f} vs {best[-1]}-thread ({verdict})"
        f" | {cores['tiler']:.2f} / {cores['floor1']:.2f} / {cores['floor2']:.2f}"
        f" | {cpu_ms['tiler']:.2f} / {cpu_ms['floor1']:.2f} / {cpu_ms['floor2']:.2f}"
        f" | {size['tiler']:.1f} / {size['floor1']:.1f} |"
    )


def main() -> None:
    """Make or reuse the image, measure each pair, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", type=Path, help="GeoTIFF to use (made there if missing)")
    parser.add_argument("--size", type=int, default=10000, help="side of a made image")
    parser.add_argument("--pairs", help="FORMAT:COMPRESSION,... (default: every valid pair)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--limit", type=int, help="only the first K tiles")
    parser.add_argument(
        "--floor-writer",
        choices=("copy", "direct"),
        default="copy",
        help="how the plain loop writes PNG, JPEG and NITF tiles (see floor_recipe)",
    )
    args = parser.parse_args()
    try:
        pairs = parse_pairs(args.pairs)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    if args.runs < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--runs and --limit must be at least 1")
    settings = Settings()
    # As the worker's main does: GDAL sizes its block cache once, at first use.
    os.environ["GDAL_CACHEMAX"] = str(settings.gdal_cache_mb)
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image or Path(tmp) / "tiles.tif"
        if not image.exists():
            started = time.perf_counter()
            make_image(image, args.size)
            print(f"made {image} in {time.perf_counter() - started:.1f} s", flush=True)
        run_all(str(image), pairs, settings, args)


def run_all(
    image: str, pairs: list[tuple[str, str]], settings: Settings, args: argparse.Namespace
) -> None:
    """Measure every pair on one long-lived pool (as the service has), then print the table."""
    rows: list[str] = []
    checks: list[str] = []
    measured = 0
    started_load = os.getloadavg()[0]
    endpoint = NullEndpoint()
    with ThreadPoolExecutor(settings.encode_threads, thread_name_prefix="tiles") as executor:
        pipeline = ImagePipeline(settings, NullEndpoints(endpoint), NoSinks(), executor)
        for pair in pairs:
            request = tile_request(image, args.tile, args.overlap, pair)
            job = asyncio.run(pipeline.plan(ImageRef(request, 0)))
            if (job.plan.tile_format, job.plan.tile_compression) != pair:
                raise RuntimeError(f"{pair} planned as {job.plan.tile_format}")
            regions = first_tiles(job.regions, args.limit)
            recipe = floor_recipe(pair, args.floor_writer)
            bench = PairBench(pipeline, endpoint, job, regions, recipe)
            if not rows:
                info = job.info
                print(
                    f"image {image}: {info.width} x {info.height}, {info.band_count} x"
                    f" {info.dtype}, {info.crs}; tile {args.tile} / overlap {args.overlap}:"
                    f" {job.tile_count} tiles in {len(job.regions)} region(s), measuring"
                    f" {len(bench.windows)}; encode_threads {settings.encode_threads},"
                    f" GDAL_CACHEMAX {settings.gdal_cache_mb} MB, {os.cpu_count()} CPUs",
                    flush=True,
                )
            measured = len(bench.windows)
            checks.append(f"{pair[0]}/{pair[1]}: {check_one_tile(bench, pair)}")
            print(f"{pair[0]}/{pair[1]}:", flush=True)
            rows.append(table_row(pair, measure(bench, args.runs)))
    print()
    print(
        f"Tiles/s, median of {args.runs} run(s), {measured} tiles per run. Target:"
        f" tiler >= {TARGET:.0%} of the best (fastest) floor of the same run. Load average"
        f" (1 min) {started_load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
        f" ({os.cpu_count()} CPUs): other processes' CPU use lowers the 2-thread figures."
    )
    print()
    print(
        "| format | compression | tiler tiles/s | floor 1-thread tiles/s | floor 2-thread tiles/s"
        " | tiler / best floor | cores (tiler / floor 1t / floor 2t)"
        " | CPU ms per tile (tiler / floor 1t / floor 2t) | tile KiB (tiler / floor) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    print()
    print("Sanity (one tile per pair, decoded with rasterio):")
    for line in checks:
        print(f"- {line}")


if __name__ == "__main__":
    main()
