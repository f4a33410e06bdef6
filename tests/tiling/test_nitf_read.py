"""The uncompressed-NITF reader against GDAL, which reads the same bytes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from tiling.encode import decode_tile, encode_tile
from tiling.nitf_read import read_uncompressed

SAMPLE = Path(__file__).resolve().parents[2] / "infra" / "sample" / "i_3001a.ntf"


def write_in_memory(driver: str, pixels: np.ndarray, **options: Any) -> bytes:
    """The bytes GDAL's ``driver`` writes for ``pixels`` with creation ``options``."""
    bands, rows, cols = pixels.shape
    profile: dict[str, Any] = {"count": bands, "height": rows, "width": cols}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile() as memfile:
            with memfile.open(driver=driver, dtype=pixels.dtype, **profile, **options) as dst:
                dst.write(pixels)
            return bytes(memfile.read())


def write_nitf(pixels: np.ndarray, georeferenced: bool = False, **options: Any) -> bytes:
    """The bytes GDAL's NITF driver writes for ``pixels`` with creation ``options``."""
    if georeferenced:
        options.update(crs=CRS.from_epsg(4326), transform=Affine(1e-4, 0, 10.0, 0, -1e-4, 50.0))
        options.setdefault("ICORDS", "G")
    return write_in_memory("NITF", pixels, **options)


def assert_reads(data: bytes, pixels: np.ndarray) -> None:
    """The reader gives ``pixels`` for ``data``."""
    array = read_uncompressed(data)
    assert array is not None
    np.testing.assert_array_equal(array, pixels)


def gdal_pixels(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(data) as memfile, memfile.open() as src:
            return np.asarray(src.read())


def random_pixels(dtype: str, bands: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(0, 1000, (bands, rows, cols)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (bands, rows, cols), endpoint=True, dtype=dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "uint32", "int32", "float32"])
@pytest.mark.parametrize("bands", [1, 3, 4])
def test_what_the_tiler_writes(dtype: str, bands: int) -> None:
    """Every band count and pixel type a NITF/NONE tile can have, georeferenced or not."""
    pixels = random_pixels(dtype, bands, 37, 53)
    for georeferenced in (False, True):
        data = write_nitf(pixels, georeferenced=georeferenced)
        array = read_uncompressed(data)
        assert array is not None
        assert array.dtype == gdal_pixels(data).dtype == np.dtype(dtype)
        assert array.dtype.isnative
        np.testing.assert_array_equal(array, pixels)
        np.testing.assert_array_equal(array, gdal_pixels(data))


@pytest.mark.parametrize("mode", ["B", "P", "R", "S"])
@pytest.mark.parametrize("block", [None, (16, 8), (64, 32)])
def test_every_interleave_and_blocking(mode: str, block: tuple[int, int] | None) -> None:
    """IMODE B, P, R and S, in one block or in blocks that overhang the image's edges."""
    pixels = random_pixels("uint16", 3, 45, 70, seed=1)
    options: dict[str, Any] = {"IMODE": mode}
    if block is not None:
        options.update(BLOCKXSIZE=block[0], BLOCKYSIZE=block[1])
    data = write_nitf(pixels, **options)
    array = read_uncompressed(data)
    assert array is not None
    np.testing.assert_array_equal(array, gdal_pixels(data))
    np.testing.assert_array_equal(array, pixels)


def test_comments_and_extensions_move_the_pixels() -> None:
    """Image comments and a TRE lengthen the subheader; the pixels are found after it."""
    pixels = random_pixels("uint8", 3, 20, 30, seed=2)
    data = write_nitf(pixels, ICOM="first comment line", TRE="TESTTR=0123456789")
    assert b"first comment line" in data
    assert b"TESTTR" in data
    assert_reads(data, pixels)


def test_the_tilers_own_tiles() -> None:
    pixels = random_pixels("uint8", 3, 64, 48, seed=3)
    data = encode_tile(pixels, "NITF", "NONE")
    array = read_uncompressed(data)
    assert array is not None
    assert array.flags.writeable  # a copy, as GDAL's read is
    np.testing.assert_array_equal(array, pixels)
    np.testing.assert_array_equal(decode_tile(data), pixels)


def test_the_sample_image() -> None:
    with rasterio.open(SAMPLE) as src:
        assert_reads(SAMPLE.read_bytes(), src.read())


def test_nsif_is_read() -> None:
    pixels = random_pixels("uint8", 3, 24, 24, seed=4)
    data = write_nitf(pixels, FHDR="NSIF01.00")
    assert data.startswith(b"NSIF01.00")
    assert_reads(data, pixels)


def test_what_it_leaves_to_gdal() -> None:
    """Files it does not cover answer None; ``decode_tile`` reads them with GDAL."""
    pixels = random_pixels("uint8", 3, 24, 24, seed=4)
    compressed = encode_tile(pixels, "NITF", "JPEG")
    assert b"C3" in compressed[:2000]
    assert read_uncompressed(compressed) is None
    assert decode_tile(compressed).shape == pixels.shape
    # NITF 2.0 lays out its security fields differently.
    assert read_uncompressed(b"NITF02.00" + write_nitf(pixels)[9:]) is None


def test_a_colour_table_is_left_to_gdal() -> None:
    """A 1-band image with a look-up table (IREP RGB/LUT): its pixels are indices."""
    pixels = random_pixels("uint8", 1, 16, 16, seed=5)
    profile = {"count": 1, "height": 16, "width": 16, "dtype": "uint8"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open("", "w", driver="MEM", **profile) as src, MemoryFile() as target:
            src.write(pixels)
            src.write_colormap(1, {value: (value, 0, 255 - value, 255) for value in range(256)})
            rasterio.shutil.copy(src, target.name, driver="NITF")
            data = bytes(target.read())
    assert b"RGB/LUT" in data
    assert read_uncompressed(data) is None
    np.testing.assert_array_equal(decode_tile(data), pixels)


def test_damaged_files_answer_none() -> None:
    data = write_nitf(random_pixels("uint8", 1, 32, 32))
    assert read_uncompressed(data[: len(data) - 10]) is None  # pixels cut short
    assert read_uncompressed(data[:500]) is None  # subheader cut short
    assert read_uncompressed(data[:370]) is None  # file header cut short
    assert read_uncompressed(b"NITF02.10" + b"x" * 600) is None  # fields not numbers
    assert read_uncompressed(b"\x89PNG\r\n\x1a\n") is None
    unknown_compression = bytearray(data)
    header_length = int(data[354:360])
    ic_at = data.index(b"NC", header_length + 333)  # the image subheader's IC
    unknown_compression[ic_at : ic_at + 2] = b"ZZ"
    assert read_uncompressed(bytes(unknown_compression)) is None
