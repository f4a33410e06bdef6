"""The uncompressed-TIFF reader against GDAL, which reads the same bytes."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from tests.tiling.test_nitf_read import gdal_pixels, random_pixels, write_in_memory
from tiling.encode import decode_tile, encode_tile
from tiling.tiff_read import read_uncompressed


def write_tiff(pixels: np.ndarray, **options: Any) -> bytes:
    """The bytes GDAL's GTiff driver writes for ``pixels`` with creation ``options``."""
    return write_in_memory("GTiff", pixels, **options)


def assert_read_as_gdal_reads(data: bytes) -> None:
    mine, gdal = read_uncompressed(data), gdal_pixels(data)
    assert mine is not None
    assert mine.dtype == gdal.dtype
    assert mine.dtype.isnative
    assert mine.flags.c_contiguous
    assert mine.flags.writeable
    np.testing.assert_array_equal(mine, gdal)


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]
)
@pytest.mark.parametrize("bands", [1, 3, 4])
def test_what_the_tiler_writes(dtype: str, bands: int) -> None:
    pixels = random_pixels(dtype, bands, 37, 53, seed=bands)
    utm = {"crs": CRS.from_epsg(32618), "transform": Affine(0.5, 0, 5e5, 0, -0.5, 4e6)}
    for data in (encode_tile(pixels, "GTIFF", "NONE"), write_tiff(pixels, **utm)):
        assert_read_as_gdal_reads(data)
        np.testing.assert_array_equal(decode_tile(data), pixels)


@pytest.mark.parametrize("interleave", ["PIXEL", "BAND"])
@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"BLOCKYSIZE": 5},  # strips of 5 rows, the last one shorter
        {"BLOCKYSIZE": 1},
        {"TILED": "YES", "BLOCKXSIZE": 16, "BLOCKYSIZE": 32},  # tiles overhanging both edges
        {"TILED": "YES", "BLOCKXSIZE": 64, "BLOCKYSIZE": 64},  # one tile larger than the image
    ],
)
@pytest.mark.parametrize("endianness", ["LITTLE", "BIG"])
def test_every_layout_and_byte_order(
    interleave: str, layout: dict[str, Any], endianness: str
) -> None:
    pixels = random_pixels("uint16", 3, 37, 53)
    data = write_tiff(pixels, INTERLEAVE=interleave, ENDIANNESS=endianness, **layout)
    assert data[:2] == (b"II" if endianness == "LITTLE" else b"MM")
    assert_read_as_gdal_reads(data)


def test_tiles_as_wide_as_the_image() -> None:
    pixels = random_pixels("float32", 2, 40, 32)
    data = write_tiff(pixels, TILED="YES", BLOCKXSIZE=32, BLOCKYSIZE=16, INTERLEAVE="BAND")
    assert_read_as_gdal_reads(data)


@pytest.mark.parametrize(
    ("dtype", "bands", "options"),
    [
        ("uint8", 1, {"COMPRESS": "LZW"}),
        ("uint16", 1, {"COMPRESS": "DEFLATE", "PREDICTOR": 2}),
        ("uint8", 3, {"COMPRESS": "JPEG", "PHOTOMETRIC": "YCBCR"}),
        ("uint8", 1, {"PHOTOMETRIC": "MINISWHITE"}),
        ("uint8", 4, {"PHOTOMETRIC": "CMYK"}),
        ("uint8", 1, {"NBITS": 1}),
        ("uint16", 1, {"NBITS": 12}),
        ("uint8", 1, {"BIGTIFF": "YES"}),
    ],
)
def test_what_it_leaves_to_gdal(dtype: str, bands: int, options: dict[str, Any]) -> None:
    pixels = random_pixels(dtype, bands, 24, 24) // 2
    data = write_tiff(pixels, **options)
    assert read_uncompressed(data) is None
    assert decode_tile(data).shape == (bands, 24, 24)  # GDAL reads it


def test_a_colour_table_is_left_to_gdal() -> None:
    pixels = random_pixels("uint8", 1, 16, 16)
    with MemoryFile() as memfile:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with memfile.open(
                driver="GTiff", dtype="uint8", count=1, height=16, width=16, PHOTOMETRIC="PALETTE"
            ) as dst:
                dst.write(pixels)
                dst.write_colormap(1, {value: (value, 0, 0, 255) for value in range(256)})
        data = bytes(memfile.read())
    assert read_uncompressed(data) is None


def test_damaged_files_answer_none() -> None:
    data = write_tiff(random_pixels("uint8", 1, 32, 32), BLOCKYSIZE=8)
    assert read_uncompressed(data) is not None
    for cut in (2, 7, 8, 100, len(data) // 2, len(data) - 1):
        assert read_uncompressed(data[:cut]) is None, cut
    directory = int.from_bytes(data[4:8], "little")
    past_the_end = data[:4] + (len(data) + 10).to_bytes(4, "little") + data[8:]
    assert read_uncompressed(past_the_end) is None
    no_entries = bytearray(data)
    no_entries[directory : directory + 2] = b"\x00\x00"
    assert read_uncompressed(bytes(no_entries)) is None
    for other in (
        b"",
        b"II",
        b"II+\x00" + data[4:],
        b"MM\x00*",
        b"\x89PNG\r\n\x1a\n",
        b"NITF02.10",
    ):
        assert read_uncompressed(other) is None
