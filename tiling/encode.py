"""Tile encoding in memory (no temp files): NITF, GTIFF, PNG and JPEG.

Pure with respect to the outside world: bytes in, bytes out, through GDAL's in-memory files.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError  # GDAL errors raised by rasterio.shutil.copy
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import BufferedDatasetWriter, MemoryFile

from tiling.errors import TileDecodeError, UnsupportedEncodingError
from tiling.gdalenv import ensure_thread_env
from tiling.nitf_read import read_uncompressed
from tiling.tiff_read import read_uncompressed as read_uncompressed_tiff

WGS84_EPSG = 4326
_UTM_WGS84_EPSG = frozenset(range(32601, 32661)) | frozenset(range(32701, 32761))

CONTENT_TYPES = {
    "NITF": "image/nitf",
    "GTIFF": "image/tiff",
    "PNG": "image/png",
    "JPEG": "image/jpeg",
}


@dataclass(frozen=True, slots=True)
class TileGeoref:
    """Georeferencing written into formats that carry it (GTIFF; NITF for WGS84 or UTM).

    ``nitf_options`` are NITF creation options carrying the source's metadata updated for the
    tile (for a SICD: the chip's image subheader fields and SICD XML); other formats ignore
    them.
    """

    transform: Affine | None
    crs: CRS | None
    nitf_options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Recipe:
    driver: str
    options: dict[str, str]
    create_copy: bool


_RECIPES: dict[tuple[str, str], _Recipe] = {
    ("NITF", "NONE"): _Recipe("NITF", {"IC": "NC"}, create_copy=False),
    ("NITF", "JPEG"): _Recipe("NITF", {"IC": "C3"}, create_copy=True),
    (
        "NITF",
        "J2K",
    ): _Recipe("NITF", {"IC": "C8", "JPEG2000_DRIVER": "JP2OpenJPEG"}, create_copy=True),
    ("GTIFF", "NONE"): _Recipe("GTiff", {}, create_copy=False),
    ("GTIFF", "LZW"): _Recipe("GTiff", {"COMPRESS": "LZW"}, create_copy=False),
    ("GTIFF", "JPEG"): _Recipe("GTiff", {"COMPRESS": "JPEG"}, create_copy=False),
    ("PNG", "NONE"): _Recipe("PNG", {}, create_copy=True),
    ("JPEG", "NONE"): _Recipe("JPEG", {}, create_copy=True),
    ("JPEG", "JPEG"): _Recipe("JPEG", {}, create_copy=True),
}


# Pixel types each format can hold (GDAL drivers); NITF and GTIFF hold them all.
_FORMAT_DTYPES: dict[str, frozenset[str]] = {
    "PNG": frozenset({"uint8", "uint16"}),
    "JPEG": frozenset({"uint8"}),
}
_JPEG_DTYPES = frozenset({"uint8"})
_RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
_RGB_BANDS = {3: _RGB, 4: (*_RGB, ColorInterp.alpha)}  # 8-bit band counts read as colour
_J2K_DTYPES = frozenset({"uint8", "int8", "uint16", "int16", "uint32", "int32"})


def resolve_encoding(dtype: str, tile_format: str, compression: str) -> tuple[str, str]:
    """The format and compression to use for pixels of ``dtype``.

    JPEG 2000 cannot hold floating-point pixels: NITF/J2K falls back to uncompressed NITF
    (the caller logs it). Other impossible combinations are refused.

    Raises:
        UnsupportedEncodingError: Naming the pixel type and the pair.
    """
    tile_format, compression = tile_format.upper(), compression.upper()
    allowed = _FORMAT_DTYPES.get(tile_format)
    if allowed is not None and dtype not in allowed:
        holds = ", ".join(sorted(allowed))
        raise UnsupportedEncodingError(
            f"{dtype} pixels cannot be encoded as {tile_format} (it holds {holds})"
        )
    if compression == "JPEG" and dtype not in _JPEG_DTYPES:
        raise UnsupportedEncodingError(
            f"{dtype} pixels cannot be JPEG-compressed (8-bit only); use compression NONE or LZW"
        )
    if compression == "J2K" and dtype not in _J2K_DTYPES:
        return tile_format, "NONE"
    return tile_format, compression


def content_type(tile_format: str) -> str:
    """MIME type of a tile format (``image/nitf``, ``image/tiff``, ...)."""
    return CONTENT_TYPES[tile_format.upper()]


def encode_tile(
    pixels: npt.NDArray[Any],
    tile_format: str,
    compression: str,
    georef: TileGeoref | None = None,
) -> bytes:
    """Encode a ``(bands, rows, cols)`` array as a tile file held in memory.

    Args:
        pixels: Band-first pixel array; the pixel type and band count are kept.
        tile_format: NITF, GTIFF, PNG or JPEG.
        compression: NONE, JPEG, J2K or LZW.
        georef: Georeferencing, written into GTIFF tiles, and into NITF tiles (ICORDS and
            IGEOLO of the tile's corners) when the CRS is WGS84 geographic or UTM; its NITF
            options into NITF tiles.

    Returns:
        The encoded file.

    Raises:
        UnsupportedEncodingError: For an unknown pair or pixels the format cannot hold.
    """
    recipe = _RECIPES.get((tile_format.upper(), compression.upper()))
    if recipe is None:
        raise UnsupportedEncodingError(
            f"tile format {tile_format} cannot use compression {compression}"
        )
    if pixels.ndim != 3:  # noqa: PLR2004 - bands, rows, cols
        raise UnsupportedEncodingError(f"expected a (bands, rows, cols) array, got {pixels.shape}")
    profile: dict[str, Any] = {
        "count": pixels.shape[0],
        "height": pixels.shape[1],
        "width": pixels.shape[2],
        "dtype": pixels.dtype.name,
    }
    georeferenced = (
        georef is not None and georef.transform is not None and _carries(recipe.driver, georef.crs)
    )
    if georef is not None and georeferenced:
        profile.update(transform=georef.transform, crs=georef.crs)
    if georef is not None and georef.nitf_options and recipe.driver == "NITF":
        recipe = _Recipe(
            recipe.driver, {**recipe.options, **georef.nitf_options}, recipe.create_copy
        )
    ensure_thread_env()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            # A georeferenced NITF is made by CreateCopy, which sets ICORDS and IGEOLO.
            if recipe.create_copy or (georeferenced and recipe.driver == "NITF"):
                return _encode_by_copy(pixels, recipe, profile)
            return _encode_direct(pixels, recipe, profile)
    except (RasterioError, CPLE_BaseError, ValueError, TypeError) as err:
        raise UnsupportedEncodingError(
            f"cannot encode {pixels.dtype.name} pixels as {tile_format}/{compression}: {err}"
        ) from err


def _carries(driver: str, crs: CRS | None) -> bool:
    """Whether a tile of ``driver`` can carry georeferencing in ``crs``."""
    if driver == "GTiff":
        return True
    if driver != "NITF" or crs is None:
        return False
    # NITF IGEOLO holds WGS84 geographic or UTM corners only.
    epsg = crs.to_epsg()
    return epsg == WGS84_EPSG or (epsg is not None and epsg in _UTM_WGS84_EPSG)


def _encode_direct(pixels: npt.NDArray[Any], recipe: _Recipe, profile: dict[str, Any]) -> bytes:
    with MemoryFile() as memfile:
        with memfile.open(driver=recipe.driver, **profile, **recipe.options) as dst:
            dst.write(pixels)
        return bytes(memfile.read())


def _encode_by_copy(pixels: npt.NDArray[Any], recipe: _Recipe, profile: dict[str, Any]) -> bytes:
    # PNG, JPEG and compressed NITF have no direct Create: copy from an in-memory source.
    if any("<" in str(value) for value in recipe.options.values()):
        return _encode_buffered(pixels, recipe, profile)
    # The source is a MEM dataset: no encode and re-read of an intermediate file, and the copy
    # runs with the GIL released. Its colours are what a GTiff of the pixels would declare, so
    # NITF IREP and the JPEG colour space follow the band count as before.
    with rasterio.open("", "w", driver="MEM", **profile) as src, MemoryFile() as target:
        if pixels.dtype == np.uint8 and pixels.shape[0] in _RGB_BANDS:
            src.colorinterp = _RGB_BANDS[pixels.shape[0]]
        src.write(pixels)
        rasterio.shutil.copy(src, target.name, driver=recipe.driver, **recipe.options)
        return bytes(target.read())


def _encode_buffered(pixels: npt.NDArray[Any], recipe: _Recipe, profile: dict[str, Any]) -> bytes:
    """CreateCopy through rasterio's buffered writer, for options carrying XML (a SICD DES).

    rasterio.shutil.copy upper-cases option values, which breaks XML; the buffered writer
    passes them as they are. It takes rasterio's internal path type, so it is used only here.
    """
    from rasterio._path import _UnparsedPath  # noqa: PLC0415

    with MemoryFile() as target:
        options = {**profile, **recipe.options}
        path = _UnparsedPath(target.name)
        with BufferedDatasetWriter(path, "w+", driver=recipe.driver, **options) as dst:
            dst.write(pixels)
        return bytes(target.read())


def decode_tile(data: bytes) -> npt.NDArray[Any]:
    """Decode an encoded tile back into a ``(bands, rows, cols)`` array.

    Raises:
        TileDecodeError: If GDAL cannot read the bytes as an image.
    """
    # Uncompressed NITF and TIFF without GDAL (4.3 and 0.2 ms a 512 px tile with it).
    pixels = read_uncompressed(data)
    if pixels is None:
        pixels = read_uncompressed_tiff(data)
    if pixels is not None:
        return pixels
    ensure_thread_env()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile(data) as memfile, memfile.open() as src:
                return np.asarray(src.read())
    except (RasterioError, CPLE_BaseError) as err:
        raise TileDecodeError(f"cannot decode tile ({len(data)} bytes): {err}") from err
