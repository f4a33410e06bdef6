"""Tile encoding round trips."""

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

from tiling.encode import TileGeoref, content_type, decode_tile, encode_tile, resolve_encoding
from tiling.errors import TileDecodeError, UnsupportedEncodingError

PIXELS = np.random.default_rng(7).integers(0, 255, (3, 64, 48), dtype=np.uint8)


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [("NITF", "NONE"), ("GTIFF", "NONE"), ("GTIFF", "LZW"), ("PNG", "NONE")],
)
def test_lossless_round_trip(fmt: str, compression: str) -> None:
    np.testing.assert_array_equal(decode_tile(encode_tile(PIXELS, fmt, compression)), PIXELS)


@pytest.mark.parametrize(
    ("fmt", "compression"), [("NITF", "JPEG"), ("NITF", "J2K"), ("GTIFF", "JPEG"), ("JPEG", "NONE")]
)
def test_lossy_round_trip_keeps_shape(fmt: str, compression: str) -> None:
    smooth = np.broadcast_to(np.linspace(0, 250, 48, dtype=np.uint8), (3, 64, 48)).copy()
    decoded = decode_tile(encode_tile(smooth, fmt, compression))
    assert decoded.shape == smooth.shape
    assert np.abs(decoded.astype(int) - smooth).mean() < 8


def test_gtiff_tile_carries_georeferencing() -> None:
    georef = TileGeoref(Affine(0.5, 0, 500000, 0, -0.5, 4500000), CRS.from_epsg(32618))
    with MemoryFile(encode_tile(PIXELS, "GTIFF", "NONE", georef)) as memfile, memfile.open() as src:
        assert src.crs == georef.crs
        assert src.transform == georef.transform


def test_uint16_keeps_pixel_type() -> None:
    pixels = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8) * 500
    decoded = decode_tile(encode_tile(pixels, "NITF", "NONE"))
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, pixels)


def test_errors() -> None:
    with pytest.raises(UnsupportedEncodingError, match="PNG cannot use compression J2K"):
        encode_tile(PIXELS, "PNG", "J2K")
    with pytest.raises(UnsupportedEncodingError, match="cannot encode float64"):
        encode_tile(PIXELS.astype(np.float64), "PNG", "NONE")
    with pytest.raises(TileDecodeError):
        decode_tile(b"not an image")
    assert content_type("gtiff") == "image/tiff"


@pytest.mark.parametrize(
    ("dtype", "pair", "expected"),
    [
        ("uint8", ("PNG", "NONE"), ("PNG", "NONE")),
        ("uint16", ("png", "none"), ("PNG", "NONE")),
        ("float32", ("NITF", "J2K"), ("NITF", "NONE")),  # JPEG 2000 holds no floats
        ("uint16", ("NITF", "J2K"), ("NITF", "J2K")),
        ("int16", ("GTIFF", "LZW"), ("GTIFF", "LZW")),
    ],
)
def test_resolve_encoding(dtype: str, pair: tuple[str, str], expected: tuple[str, str]) -> None:
    assert resolve_encoding(dtype, *pair) == expected


@pytest.mark.parametrize(
    ("dtype", "pair", "message"),
    [
        ("float32", ("PNG", "NONE"), "float32 pixels cannot be encoded as PNG"),
        ("uint16", ("JPEG", "NONE"), "uint16 pixels cannot be encoded as JPEG"),
        ("uint16", ("GTIFF", "JPEG"), "uint16 pixels cannot be JPEG-compressed"),
    ],
)
def test_resolve_encoding_refusals(dtype: str, pair: tuple[str, str], message: str) -> None:
    with pytest.raises(UnsupportedEncodingError, match=message):
        resolve_encoding(dtype, *pair)


def test_float_nitf_round_trip() -> None:
    pixels = np.linspace(-1, 1, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    np.testing.assert_array_equal(decode_tile(encode_tile(pixels, "NITF", "NONE")), pixels)


def test_nitf_tile_carries_igeolo_of_its_corners() -> None:
    georef = TileGeoref(Affine(0.001, 0, 85.0, 0, -0.001, 33.0), CRS.from_epsg(4326))
    for compression in ("NONE", "JPEG"):
        data = encode_tile(PIXELS, "NITF", compression, georef)
        with MemoryFile(data) as memfile, memfile.open() as src:
            assert src.tags()["NITF_ICORDS"] == "G"
            assert src.crs == georef.crs
            # IGEOLO has one-second precision: the corners agree within a second.
            left, top = src.transform @ (0, 0)
            assert left == pytest.approx(85.0, abs=1 / 3600)
            assert top == pytest.approx(33.0, abs=1 / 3600)


def test_nitf_tile_in_utm_and_other_crs() -> None:
    utm = TileGeoref(Affine(0.5, 0, 583000, 0, -0.5, 4507000), CRS.from_epsg(32618))
    with MemoryFile(encode_tile(PIXELS, "NITF", "NONE", utm)) as memfile, memfile.open() as src:
        assert src.tags()["NITF_ICORDS"] == "N"
        assert src.crs == utm.crs
    mercator = TileGeoref(utm.transform, CRS.from_epsg(3857))  # NITF cannot hold it: no georef
    decoded = decode_tile(encode_tile(PIXELS, "NITF", "NONE", mercator))
    np.testing.assert_array_equal(decoded, PIXELS)
