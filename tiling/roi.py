"""Region of interest: a lon/lat WKT polygon to pixel bounds and the tiles it touches. Pure."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from tiling.errors import TilingError
from tiling.grid import Window

FloatArray = npt.NDArray[np.float64]

_SNAP_PX = 1e-6


class RegionError(TilingError, ValueError):
    """The region of interest cannot be used with this image."""


class WorldToImage(Protocol):
    """A sensor model with a world-to-image direction."""

    def world_to_image(self, lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Pixel (col, row) arrays for lon/lat arrays."""
        ...


def region_in_pixels(
    wkt: str, sensor_model: WorldToImage, image: Window
) -> tuple[Window, BaseGeometry]:
    """The region's pixel polygon clipped to the image, and the window bounding it.

    Raises:
        RegionError: If the region does not overlap the image.
    """
    try:
        world = shapely.from_wkt(wkt)
    except shapely.errors.ShapelyError as err:
        raise RegionError(f"regionOfInterest is not valid WKT: {err}") from err

    def to_pixels(xy: FloatArray) -> FloatArray:
        cols, rows = sensor_model.world_to_image(xy[:, 0], xy[:, 1])
        return np.column_stack((cols, rows))

    pixels = shapely.make_valid(shapely.transform(world, to_pixels))
    frame = shapely.box(image.col_off, image.row_off, image.col_end, image.row_end)
    clipped = shapely.intersection(pixels, frame)
    if clipped.is_empty or clipped.area == 0:
        raise RegionError("regionOfInterest does not overlap the image")
    # Round outwards, but not across a pixel edge the region only misses by round-off.
    minx, miny, maxx, maxy = clipped.bounds
    col_off, row_off = math.floor(minx + _SNAP_PX), math.floor(miny + _SNAP_PX)
    col_end, row_end = math.ceil(maxx - _SNAP_PX), math.ceil(maxy - _SNAP_PX)
    window = Window(col_off, row_off, col_end - col_off, row_end - row_off)
    return window, clipped


def tiles_in_region(tiles: list[Window], region: BaseGeometry) -> list[Window]:
    """The tiles whose area overlaps the region (touching an edge is not enough)."""
    boxes = shapely.box(
        [t.col_off for t in tiles],
        [t.row_off for t in tiles],
        [t.col_end for t in tiles],
        [t.row_end for t in tiles],
    )
    shapely.prepare(region)
    keep = shapely.intersects(region, boxes) & ~shapely.touches(region, boxes)
    return [tile for tile, kept in zip(tiles, keep.tolist(), strict=True) if kept]
