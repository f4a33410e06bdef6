"""Which boxes can overlap: tile-overlap bands and a uniform grid of candidate pairs.

Pure numpy; no I/O. Costs grow with the number of boxes and of true neighbours, not with the
square of the number of boxes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

# Boxes larger than this quantile of sizes are checked against all boxes instead of through
# the grid, so a few huge boxes do not make every grid cell huge.
_CELL_QUANTILE = 0.99
_MIN_CELL_PX = 1.0
_BRUTE_FORCE_MAX = 64
_SOURCES_PER_SLICE = 8192
_NO_PAIRS = (np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp), np.empty(0))


def in_overlap_bands(
    boxes: FloatArray,
    col_origins: IntArray,
    row_origins: IntArray,
    tile_width_px: int,
    tile_height_px: int,
) -> BoolArray:
    """True for boxes that touch more than one tile of the grid (those in overlap bands).

    A box that lies in one tile only cannot overlap a box reported by another tile, since every
    tile's boxes lie inside that tile.

    Args:
        boxes: ``(N, 4)`` ``[minx, miny, maxx, maxy]`` in full-image pixels.
        col_origins: Sorted tile column origins of the grid.
        row_origins: Sorted tile row origins of the grid.
        tile_width_px: Tile width.
        tile_height_px: Tile height.
    """
    cols = _tiles_spanned(boxes[:, 0], boxes[:, 2], col_origins, tile_width_px)
    rows = _tiles_spanned(boxes[:, 1], boxes[:, 3], row_origins, tile_height_px)
    mask: BoolArray = cols * rows > 1
    return mask


def _tiles_spanned(lo: FloatArray, hi: FloatArray, origins: IntArray, size: int) -> IntArray:
    # Tiles [o, o + size) whose open interval meets (lo, hi): o < hi and o + size > lo.
    starts = np.searchsorted(origins, hi, side="left")
    ends = np.searchsorted(origins + size, lo, side="right")
    spanned: IntArray = np.maximum(starts - ends, 1)
    return spanned


Pairs = tuple[IntArray, IntArray, FloatArray]


def overlapping_pairs(boxes: FloatArray, labels: IntArray, min_iou: float = 0.0) -> Pairs:
    """All pairs ``i < j`` of same-label boxes with IoU above ``min_iou``, and that IoU.

    Boxes are hashed by their top-left corner into square cells at least as large as almost
    every box, so intersecting boxes sit in the same or a neighbouring cell. The rare larger
    boxes look up the cells they cover, and are paired among themselves the same way.
    Candidates are filtered slice by slice: memory follows the pairs kept.
    """
    if boxes.shape[0] < 2:  # noqa: PLR2004
        return _NO_PAIRS
    # Labels side by side along x, far enough apart that boxes of two labels never meet.
    extent = float(np.max(boxes[:, 2:] - boxes[:, :2]))
    span = float(boxes[:, 2].max() - boxes[:, 0].min()) + 2 * extent + 1
    placed = boxes.copy()
    placed[:, [0, 2]] += labels[:, np.newaxis] * span
    keep = _PairFilter(placed, min_iou)
    first, second, iou = _candidate_pairs(placed, np.arange(boxes.shape[0], dtype=np.intp), keep)
    return np.minimum(first, second), np.maximum(first, second), iou


def _candidate_pairs(boxes: FloatArray, members: IntArray, keep: _PairFilter) -> Pairs:
    if members.size <= _BRUTE_FORCE_MAX:
        i, j = np.triu_indices(members.size, k=1)
        return keep(members[i], members[j])
    sub = boxes[members]
    extent = np.maximum(sub[:, 2] - sub[:, 0], sub[:, 3] - sub[:, 1])
    cell = max(float(np.quantile(extent, _CELL_QUANTILE)), _MIN_CELL_PX)
    big = extent > cell
    grid = _Grid(boxes, members[~big], cell)
    pairs = [keep(first, second) for first, second in grid.pairs()]
    for index in members[big]:
        near = grid.near(boxes[index])
        pairs.append(keep(np.full(near.size, index, dtype=np.intp), near))
    pairs.append(_candidate_pairs(boxes, members[big], keep))
    return (
        np.concatenate([p[0] for p in pairs]),
        np.concatenate([p[1] for p in pairs]),
        np.concatenate([p[2] for p in pairs]),
    )


def pair_iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """IoU of the boxes of two ``(N, 4)`` arrays, row by row."""
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union -= inter
    iou: FloatArray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


class _PairFilter:
    """Keeps the candidate pairs whose IoU exceeds a threshold."""

    def __init__(self, boxes: FloatArray, min_iou: float) -> None:
        self.boxes = boxes
        self.min_iou = min_iou

    def __call__(self, first: IntArray, second: IntArray) -> Pairs:
        iou = pair_iou(self.boxes[first], self.boxes[second])
        kept = iou > self.min_iou
        return first[kept], second[kept], iou[kept]


class _Grid:
    """Boxes no larger than ``cell`` hashed by the cell of their top-left corner."""

    def __init__(self, boxes: FloatArray, members: IntArray, cell: float) -> None:
        self.cell = cell
        cx = np.floor(boxes[members, 0] / cell).astype(np.int64)
        cy = np.floor(boxes[members, 1] / cell).astype(np.int64)
        self.x0 = int(cx.min()) - 1 if members.size else 0
        self.y0 = int(cy.min()) - 1 if members.size else 0
        self.width = (int(cx.max()) - self.x0 + 2) if members.size else 1
        keys = (cy - self.y0) * self.width + (cx - self.x0)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.members = members[order]

    def pairs(self) -> Iterator[tuple[IntArray, IntArray]]:
        """Candidate pairs of members in the same or adjacent cells, each pair once, a slice
        of members at a time."""
        keys = self.keys
        # The same cell (later entries only) and four forward neighbours cover each pair once.
        for offset in (0, 1, self.width - 1, self.width, self.width + 1):
            if offset == 0:
                lo = np.arange(keys.size) + 1
            else:
                lo = np.searchsorted(keys, keys + offset, side="left")
            hi = np.searchsorted(keys, keys + offset, side="right")
            counts = np.maximum(hi - lo, 0)
            for start in range(0, keys.size, _SOURCES_PER_SLICE):
                part = slice(start, start + _SOURCES_PER_SLICE)
                part_counts = counts[part]
                total = int(part_counts.sum())
                if not total:
                    continue
                source = np.repeat(np.arange(start, start + part_counts.size), part_counts)
                offsets = np.repeat(lo[part] - np.cumsum(part_counts) + part_counts, part_counts)
                target = offsets + np.arange(total)
                yield self.members[source], self.members[target]

    def near(self, box: FloatArray) -> IntArray:
        """Members whose cells a box (of any size) may reach."""
        cx_lo = max(int(np.floor((box[0] - self.cell) / self.cell)) - self.x0, 0)
        cx_hi = min(int(np.floor(box[2] / self.cell)) - self.x0, self.width - 1)
        cy_lo = max(int(np.floor((box[1] - self.cell) / self.cell)) - self.y0, 0)
        cy_hi = int(np.floor(box[3] / self.cell)) - self.y0
        if cx_lo > cx_hi or self.keys.size == 0:
            return np.empty(0, dtype=np.intp)
        cy_hi = min(cy_hi, int(self.keys[-1] // self.width))
        found = [
            self.members[
                np.searchsorted(self.keys, row * self.width + cx_lo, side="left") : np.searchsorted(
                    self.keys, row * self.width + cx_hi, side="right"
                )
            ]
            for row in range(cy_lo, cy_hi + 1)
        ]
        return np.concatenate(found) if found else np.empty(0, dtype=np.intp)
