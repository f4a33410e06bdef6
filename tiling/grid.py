"""The tile grid: pure functions on plain values, no I/O.

Per axis, with tile ``t``, minimum overlap ``o`` and length ``L``, the grid has
``n = max(1, ceil((L - o) / (t - o)))`` tiles. A single tile is ``min(t, L)`` long; otherwise
tiles are full size and spread evenly, origin ``i`` at ``floor(i * (L - t) / (n - 1))``, so the
first tile starts at 0, the last ends exactly at ``L`` and every overlap is at least ``o``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tiling.errors import InvalidGridError


@dataclass(frozen=True, slots=True)
class Window:
    """A rectangle of pixels: column/row offset of its top-left corner and its size."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def col_end(self) -> int:
        """One past the last column."""
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        """One past the last row."""
        return self.row_off + self.height


def axis_origins(length_px: int, tile_px: int, overlap_px: int) -> list[int]:
    """Return the tile origins along one axis.

    Args:
        length_px: Length of the axis to cover (> 0).
        tile_px: Tile length (> 0).
        overlap_px: Minimum overlap between neighbouring tiles (0 <= overlap < tile).

    Returns:
        Sorted origins; the tile length is ``min(tile_px, length_px)``.

    Raises:
        InvalidGridError: If the sizes cannot form a grid.
    """
    if length_px <= 0:
        raise InvalidGridError(f"image length must be positive, got {length_px}")
    if tile_px <= 0:
        raise InvalidGridError(f"tile size must be positive, got {tile_px}")
    if not 0 <= overlap_px < tile_px:
        raise InvalidGridError(
            f"tile overlap must be >= 0 and smaller than the tile size {tile_px}, got {overlap_px}"
        )
    if length_px <= tile_px:
        return [0]
    stride = tile_px - overlap_px
    count = max(1, -(-(length_px - overlap_px) // stride))
    span = length_px - tile_px
    return [(i * span) // (count - 1) for i in range(count)]


def tile_grid(bounds: Window, tile_px: int, overlap_px: int) -> list[Window]:
    """Return the tiles covering ``bounds`` in row-major order.

    Args:
        bounds: The pixel area to cover (whole image or region of interest).
        tile_px: Square tile size in pixels.
        overlap_px: Minimum overlap between neighbouring tiles in pixels.

    Returns:
        Windows in full-image pixel coordinates, each inside ``bounds``.
    """
    return list(iter_tiles(bounds, tile_px, overlap_px))


def iter_tiles(bounds: Window, tile_px: int, overlap_px: int) -> Iterator[Window]:
    """Yield the tiles of :func:`tile_grid` lazily, row by row."""
    cols = axis_origins(bounds.width, tile_px, overlap_px)
    rows = axis_origins(bounds.height, tile_px, overlap_px)
    width = min(tile_px, bounds.width)
    height = min(tile_px, bounds.height)
    for row in rows:
        for col in cols:
            yield Window(bounds.col_off + col, bounds.row_off + row, width, height)


def count_tiles(bounds: Window, tile_px: int, overlap_px: int) -> int:
    """Return the number of tiles :func:`tile_grid` yields, without building them."""
    cols = axis_origins(bounds.width, tile_px, overlap_px)
    rows = axis_origins(bounds.height, tile_px, overlap_px)
    return len(cols) * len(rows)
