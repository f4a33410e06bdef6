"""Regions: the units of work many workers share. Pure; no I/O.

A region is a block of whole tiles of the image's grid, at most about ``region_px`` on a side,
so the tiles a region holds are exactly the tiles the whole-image grid has there; neighbouring
regions overlap by one tile overlap. Every worker derives the same regions from the same plan,
so a region is named by its number alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from postprocessing.features import TileLayout
from tiling.grid import Window


@dataclass(frozen=True, slots=True)
class Region:
    """Region ``region_id`` (1-based) of an image: its tiles and the pixels they cover."""

    region_id: int
    bounds: Window
    tiles: tuple[Window, ...]


def tiles_per_region(region_px: int, tile_px: int, overlap_px: int) -> int:
    """How many tiles of one axis a region spans: the most that fit in ``region_px`` (>= 1)."""
    stride = max(1, tile_px - overlap_px)
    return max(1, (region_px - tile_px) // stride + 1)


def split_regions(
    tiles: list[Window], layout: TileLayout, region_px: int, overlap_px: int
) -> list[Region]:
    """Group ``tiles`` (a subset of ``layout``'s grid) into regions, row-major.

    Regions without tiles (outside a region of interest) are left out; numbering is 1..N over
    the regions that remain.
    """
    col_index = {int(c): i for i, c in enumerate(layout.col_origins)}
    row_index = {int(r): i for i, r in enumerate(layout.row_origins)}
    per_col = tiles_per_region(region_px, layout.tile_width_px, overlap_px)
    per_row = tiles_per_region(region_px, layout.tile_height_px, overlap_px)
    groups: dict[tuple[int, int], list[Window]] = {}
    for tile in tiles:
        key = (row_index[tile.row_off] // per_row, col_index[tile.col_off] // per_col)
        groups.setdefault(key, []).append(tile)
    regions = []
    for number, key in enumerate(sorted(groups), start=1):
        members = groups[key]
        col_off = min(t.col_off for t in members)
        row_off = min(t.row_off for t in members)
        bounds = Window(
            col_off,
            row_off,
            max(t.col_end for t in members) - col_off,
            max(t.row_end for t in members) - row_off,
        )
        regions.append(Region(number, bounds, tuple(members)))
    return regions
