"""From a model's per-pixel output to ModelRunner features.

Segmentation models answer with maps, not objects: a probability (or foreground) map is
thresholded and split into connected components (8-connected), a label image is taken as it
is. Each object becomes one feature in tile pixels: its outline (``rasterio.features.shapes``)
or, faster, its bounding box, with a score (the mean probability inside it, 1.0 for a label
image) and the class the request names.

A probability map's objects usually cover a small part of the tile, so the per-pixel work
(labelling, boxes, areas, scores, tracing) is done once over a compact mosaic of the map's
occupied parts, not over the whole tile; see ``probability_to_features``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import rasterio.features
from scipy import ndimage

from tiling.gdalenv import ensure_thread_env

GeometryMode = Literal["polygon", "bbox"]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

# Objects are traced in a mosaic of their boxes when it is at most this share of the tile.
MOSAIC_SHARE = 0.5
# Side of the blocks whose occupied neighbourhoods make a probability map's mosaic pieces: one
# byte per pixel, so a block row is one 64-bit word.
BLOCK = 8


def label_components(
    probability: npt.NDArray[np.floating[Any]], threshold: float
) -> npt.NDArray[np.int32]:
    """Connected components (8-connected) of ``probability >= threshold``, numbered from 1."""
    if probability.ndim != 2:  # noqa: PLR2004
        raise ValueError(f"expected a 2D map, got shape {probability.shape}")
    labels, _ = ndimage.label(probability >= threshold, structure=EIGHT_CONNECTED)
    return np.asarray(labels, dtype=np.int32)


def objects_to_features(
    labels: npt.NDArray[np.integer[Any]],
    class_iri: str,
    probability: npt.NDArray[np.floating[Any]] | None = None,
    min_area: int = 1,
    mode: GeometryMode = "polygon",
    model_metadata: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One feature per labelled object of at least ``min_area`` pixels (tile pixels).

    Args:
        labels: 2D label image; 0 (and below) is background.
        class_iri: The class every object gets.
        probability: The map the labels came from; an object's score is its mean. Without
            it every score is 1.0.
        min_area: Smallest object kept, in pixels.
        mode: ``polygon`` for outlines, ``bbox`` for boxes only (no tracing).
        model_metadata: Copied into every feature's ``modelMetadata``.
    """
    if labels.ndim != 2:  # noqa: PLR2004
        raise ValueError(f"expected a 2D label image, got shape {labels.shape}")
    labels32: npt.NDArray[np.int32] = np.asarray(labels, dtype=np.int32)
    tally = _tally(labels32, probability, min_area)
    if tally is None:
        return []
    ids, areas, kept, scores, slices = tally
    outlines = _outlines(labels32, kept, areas, ids, slices) if mode == "polygon" else {}
    metadata = dict(model_metadata or {})
    features = []
    for label, score in zip(ids.tolist(), scores.tolist(), strict=True):
        rows, cols = slices[label - 1]
        bbox = [cols.start, rows.start, cols.stop, rows.stop]
        features.append(_feature(bbox, outlines.get(label), score, class_iri, metadata))
    return features


def probability_to_features(
    probability: npt.NDArray[np.floating[Any]],
    threshold: float,
    class_iri: str,
    min_area: int = 1,
    mode: GeometryMode = "polygon",
    model_metadata: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One feature per connected component (8-connected) of ``probability >= threshold`` of
    at least ``min_area`` pixels, in the order of their first pixel (row by row): the same
    features as ``objects_to_features(label_components(probability, threshold), ...)``.

    The map's occupied ``BLOCK`` x ``BLOCK`` blocks are grouped into 8-connected pieces (an
    object lies inside one piece), the pieces' windows are packed into a mosaic one pixel
    apart, each holding only its own piece's pixels, and the objects are labelled, measured and
    traced there, then moved back to the tile. The work over the whole tile is one comparison
    and one pass over its blocks.

    Raises:
        ValueError: If the map is not 2D.
    """
    if probability.ndim != 2:  # noqa: PLR2004
        raise ValueError(f"expected a 2D map, got shape {probability.shape}")
    mosaic = _occupied_mosaic(probability, threshold)
    if mosaic is None:
        return []
    labels, _ = ndimage.label(mosaic.mask, structure=EIGHT_CONNECTED)
    labels32: npt.NDArray[np.int32] = np.asarray(labels, dtype=np.int32)
    tally = _tally(labels32, mosaic.values, min_area)
    if tally is None:
        return []
    ids, areas, kept, scores, slices = tally
    # Each object's shift back to the tile, from the piece its box's corner lies in.
    corners = np.array([(slices[i - 1][0].start, slices[i - 1][1].start) for i in ids.tolist()])
    shifts = mosaic.shifts[mosaic.owner[corners[:, 0], corners[:, 1]]]
    shift_of = dict(zip(ids.tolist(), shifts.tolist(), strict=True))
    outlines: dict[int, dict[str, Any]] = {}
    if mode == "polygon":
        moves = {label: (label, dy, dx) for label, (dy, dx) in shift_of.items()}
        outlines = _trace(labels32, _kept_mask(labels32, kept, areas, ids), moves)
    metadata = dict(model_metadata or {})
    placed = []
    for label, score in zip(ids.tolist(), scores.tolist(), strict=True):
        rows, cols = slices[label - 1]
        dy, dx = shift_of[label]
        # The first pixel of the object's top row, where a row-by-row labelling numbers it.
        first = cols.start + int(np.argmax(labels32[rows.start, cols] == label))
        bbox = [cols.start + dx, rows.start + dy, cols.stop + dx, rows.stop + dy]
        feature = _feature(bbox, outlines.get(label), score, class_iri, metadata)
        placed.append((rows.start + dy, first + dx, feature))
    placed.sort(key=lambda item: (item[0], item[1]))
    return [feature for _, _, feature in placed]


class _Mosaic(NamedTuple):
    """A probability map's occupied pieces packed together (see ``probability_to_features``)."""

    mask: npt.NDArray[np.bool_]  # the thresholded map, each piece holding only its own pixels
    values: npt.NDArray[np.floating[Any]]  # the map's values at the same places
    owner: npt.NDArray[np.int32]  # the piece a mosaic pixel belongs to (-1 between pieces)
    shifts: npt.NDArray[np.intp]  # per piece: tile (row, col) minus mosaic (row, col)


def _occupied_mosaic(
    probability: npt.NDArray[np.floating[Any]], threshold: float
) -> _Mosaic | None:
    """The mosaic of the map's occupied pieces, or None when nothing reaches the threshold.
    When the pieces would not pack into less than the tile, the tile is its own mosaic.

    Two pixels that touch (diagonally too) lie in the same or touching blocks, so a connected
    component never spans two pieces; one empty pixel between pieces in the mosaic keeps
    their objects apart.
    """
    mask = probability >= threshold
    height, width = mask.shape
    padded = mask
    if height % BLOCK or width % BLOCK:
        padded = np.pad(mask, ((0, -height % BLOCK), (0, -width % BLOCK)))
    words = np.ascontiguousarray(padded).view(np.uint64) != 0  # one per block row
    blocks = words.reshape(-1, BLOCK, words.shape[1]).any(axis=1)
    pieces, count = ndimage.label(blocks, structure=EIGHT_CONNECTED)
    if count == 0:
        return None
    windows = []
    for number, (block_rows, block_cols) in enumerate(ndimage.find_objects(pieces), start=1):
        rows = slice(block_rows.start * BLOCK, min(block_rows.stop * BLOCK, height))
        cols = slice(block_cols.start * BLOCK, min(block_cols.stop * BLOCK, width))
        window = mask[rows, cols]
        around = pieces[block_rows, block_cols]
        others = (around != number) & (around != 0)
        if others.any():  # another piece's blocks lie in this window: leave their pixels out
            mine = np.repeat(np.repeat(~others, BLOCK, axis=0), BLOCK, axis=1)
            window = window & mine[: window.shape[0], : window.shape[1]]
        windows.append((rows, cols, window))
    sizes = [(window.shape[0] + 1, window.shape[1] + 1) for _, _, window in windows]
    mosaic_height, mosaic_width, corners = _pack(sizes)
    if mosaic_height * mosaic_width >= height * width:  # a dense map: the tile is its mosaic
        whole = np.zeros((height, width), dtype=np.int32)
        return _Mosaic(mask, probability, whole, np.zeros((1, 2), dtype=np.intp))
    packed = np.zeros((mosaic_height, mosaic_width), dtype=bool)
    values = np.zeros((mosaic_height, mosaic_width), dtype=probability.dtype)
    owner = np.full((mosaic_height, mosaic_width), -1, dtype=np.int32)
    shifts = np.empty((len(windows), 2), dtype=np.intp)
    for piece, ((rows, cols, window), (top, left)) in enumerate(zip(windows, corners, strict=True)):
        place = (slice(top, top + window.shape[0]), slice(left, left + window.shape[1]))
        packed[place] = window
        values[place] = probability[rows, cols]
        owner[place] = piece
        shifts[piece] = (rows.start - top, cols.start - left)
    return _Mosaic(packed, values, owner, shifts)


def _tally(
    labels: npt.NDArray[np.int32],
    probability: npt.NDArray[np.floating[Any]] | None,
    min_area: int,
) -> (
    tuple[
        npt.NDArray[np.intp],
        npt.NDArray[np.intp],
        npt.NDArray[np.bool_],
        npt.NDArray[np.float64],
        list[tuple[slice, ...]],
    ]
    | None
):
    """The objects kept (ids), every label's area, which labels are kept, the kept objects'
    scores and every label's box up to the last kept one; None when none is kept."""
    foreground = labels > 0
    values = labels[foreground]
    if values.size == 0:
        return None
    # One pass over the foreground pixels gives every object's area (and score sum).
    areas = np.bincount(values)
    kept = areas >= max(min_area, 1)  # so every kept object has a box
    kept[0] = False
    ids = np.flatnonzero(kept)
    if ids.size == 0:
        return None
    if probability is None:
        scores = np.ones(ids.size)
    else:
        sums = np.bincount(values, weights=probability[foreground], minlength=areas.size)
        scores = sums[ids] / areas[ids]
    slices = ndimage.find_objects(labels, max_label=int(ids[-1]))
    return ids, areas, kept, scores, slices


def _feature(
    bbox: list[int],
    outline: dict[str, Any] | None,
    score: float,
    class_iri: str,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "imageGeometry": outline or _box(bbox),
        "imageBBox": bbox,
        "featureClasses": [{"iri": class_iri, "score": round(float(score), 6)}],
    }
    if metadata:
        properties["modelMetadata"] = metadata
    return {"type": "Feature", "geometry": None, "properties": properties}


def _box(bbox: list[int]) -> dict[str, Any]:
    minx, miny, maxx, maxy = bbox
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    return {"type": "Polygon", "coordinates": [ring]}


def _outlines(
    labels: npt.NDArray[np.int32],
    kept: npt.NDArray[np.bool_],
    areas: npt.NDArray[np.intp],
    ids: npt.NDArray[np.intp],
    slices: Sequence[tuple[slice, ...]],
) -> dict[int, dict[str, Any]]:
    """The outline (with holes) of each kept object, as GeoJSON Polygons in tile pixels.

    Tracing (GDAL's polygonize) scans every pixel it is given and costs about 0.3 ms per
    call besides. Objects that leave most of the tile empty are therefore traced in one call
    over a mosaic of their bounding boxes, packed in rows, each box holding only its own
    object (numbered by its place in the mosaic), and the outlines are moved back; otherwise
    the whole tile is traced. Both give the same outlines.
    """
    boxes = [slices[label - 1] for label in ids.tolist()]
    sizes = [(rows.stop - rows.start, cols.stop - cols.start) for rows, cols in boxes]
    height, width, corners = _pack(sizes)
    if height * width > MOSAIC_SHARE * labels.size:
        return _trace(labels, _kept_mask(labels, kept, areas, ids))
    mosaic = np.zeros((height, width), dtype=np.int32)
    moves = {}
    placed = zip(ids.tolist(), boxes, corners, sizes, strict=True)
    for place, (label, (rows, cols), (top, left), (box_height, box_width)) in enumerate(placed):
        window = mosaic[top : top + box_height, left : left + box_width]
        window[labels[rows, cols] == label] = place + 1
        moves[place + 1] = (label, rows.start - top, cols.start - left)
    return _trace(mosaic, mosaic > 0, moves)


def _kept_mask(
    labels: npt.NDArray[np.int32],
    kept: npt.NDArray[np.bool_],
    areas: npt.NDArray[np.intp],
    ids: npt.NDArray[np.intp],
) -> npt.NDArray[np.bool_]:
    """Where the kept objects are (the whole foreground when every object is kept)."""
    everything_kept = ids.size == np.count_nonzero(areas[1:])
    mask: npt.NDArray[np.bool_] = labels > 0 if everything_kept else kept[labels]
    return mask


def _trace(
    image: npt.NDArray[np.int32],
    mask: npt.NDArray[np.bool_],
    moves: Mapping[int, tuple[int, int, int]] | None = None,
) -> dict[int, dict[str, Any]]:
    """The outline (with holes) of each object of ``image`` under ``mask``, by label, as
    GeoJSON Polygons: with ``moves``, the object of value ``v`` is ``moves[v]`` = (label,
    rows down, columns right) and its outline is moved so; without, the value is the label."""
    ensure_thread_env()  # else rasterio sets up a GDAL environment around every call
    outlines: dict[int, dict[str, Any]] = {}
    for geometry, value in rasterio.features.shapes(image, mask=mask, connectivity=8):
        if moves is None:
            _keep_largest(outlines, int(value), geometry)
            continue
        label, dy, dx = moves[int(value)]
        moved = [[(x + dx, y + dy) for x, y in ring] for ring in geometry["coordinates"]]
        _keep_largest(outlines, label, {"type": "Polygon", "coordinates": moved})
    return outlines


def _pack(sizes: list[tuple[int, int]]) -> tuple[int, int, list[tuple[int, int]]]:
    """Rows of boxes (``(height, width)`` each, at least one), tallest first: the mosaic's
    height and width and each box's top-left corner, in the order given."""
    area = sum(height * width for height, width in sizes)
    width = max(*(w for _, w in sizes), int(np.sqrt(area)) + 1)
    corners: list[tuple[int, int]] = [(0, 0)] * len(sizes)
    top = left = row_height = 0
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i][0]):
        height, box_width = sizes[index]
        if left + box_width > width:
            top, left, row_height = top + row_height, 0, 0
        corners[index] = (top, left)
        left += box_width
        row_height = max(row_height, height)
    return top + row_height, width, corners


def _keep_largest(
    outlines: dict[int, dict[str, Any]], label: int, geometry: Mapping[str, Any]
) -> None:
    """Make ``geometry`` the label's outline: an 8-connected object is one shape, and of a
    label split into several (a model's label image can do that) the largest is kept."""
    if label not in outlines or _ring_area(geometry) > _ring_area(outlines[label]):
        outlines[label] = {"type": "Polygon", "coordinates": geometry["coordinates"]}


def _ring_area(geometry: Mapping[str, Any]) -> float:
    ring = np.asarray(geometry["coordinates"][0], dtype=np.float64)
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def feature_collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    """The reply ModelRunner expects."""
    return {"type": "FeatureCollection", "features": features}
