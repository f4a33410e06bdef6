"""Tiles written and pixels read by a thread without GDAL's NITF specification
(tiling/gdalenv.py ``start_without_nitf_spec``, the worker's encoder threads) are the same
bytes as with it."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from tiling.encode import _RECIPES, TileGeoref, encode_tile
from tiling.errors import UnsupportedEncodingError
from tiling.gdalenv import ensure_thread_env, start_without_nitf_spec

T = TypeVar("T")
SAMPLE = Path(__file__).parents[2] / "infra" / "sample" / "i_3001a.ntf"
GEOREFS = {
    "none": None,
    "utm": TileGeoref(Affine(0.5, 0, 500000, 0, -0.5, 4000000), CRS.from_epsg(32618)),
    "wgs84": TileGeoref(Affine(1e-5, 0, -77.1, 0, -1e-5, 38.9), CRS.from_epsg(4326)),
}
FDT = slice(25, 39)  # a NITF file header's date and time: the second it was written


def in_thread(fn: Callable[[], T], without_spec: bool) -> T:
    initializer = start_without_nitf_spec if without_spec else ensure_thread_env
    with ThreadPoolExecutor(1, initializer=initializer) as pool:
        return pool.submit(fn).result()


def comparable(data: bytes) -> bytes:
    """The file with every copy of its creation time blanked (it may tick between writes)."""
    if data[:4] != b"NITF":
        return data
    return data.replace(data[FDT], b"0" * 14)


@pytest.mark.parametrize("georef", list(GEOREFS))
@pytest.mark.parametrize("pair", sorted(_RECIPES))
def test_tiles_are_the_same_bytes(pair: tuple[str, str], georef: str) -> None:
    rng = np.random.default_rng(3)
    for bands, dtype in ((3, "uint8"), (1, "uint8"), (1, "uint16"), (4, "uint8")):
        pixels = rng.integers(0, 200, (bands, 64, 96)).astype(dtype)
        fmt, compression = pair

        def write(pixels: Any = pixels, fmt: str = fmt, compression: str = compression) -> bytes:
            try:
                return encode_tile(pixels, fmt, compression, GEOREFS[georef])
            except UnsupportedEncodingError as err:  # a pair refused: the same refusal either way
                return repr(err).encode()

        assert comparable(in_thread(write, True)) == comparable(in_thread(write, False))


def test_nitf_pixels_read_the_same() -> None:
    def read() -> bytes:
        with rasterio.open(SAMPLE) as src:
            return bytes(src.read().tobytes())

    assert in_thread(read, True) == in_thread(read, False)


def test_the_thread_has_no_nitf_spec_and_others_keep_it() -> None:
    def data_dir() -> str:
        return str(rasterio.env.getenv().get("GDAL_DATA", ""))

    assert in_thread(data_dir, True) == str(Path(__file__).parents[2] / "tiling")
    assert in_thread(data_dir, False) != str(Path(__file__).parents[2] / "tiling")
