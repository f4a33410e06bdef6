"""From a model's per-pixel output to ModelRunner features.

Segmentation models answer with maps, not objects: a probability (or foreground) map is
thresholded and split into connected components (8-connected), a label image is taken as it
is. Each object becomes one feature in tile pixels: its outline (``rasterio.features.shapes``)
or, faster, its bounding box, with a score (the mean probability inside it, 1.0 for a label
image) and the class the request names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio.features
from scipy import ndimage

from tiling.gdalenv import ensure_thread_env

GeometryMode = Literal["polygon", "bbox"]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

# Objects are traced in a mosaic of their boxes when it is at most this share of the tile.
MOSAIC_SHARE = 0.5


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
    foreground = labels32 > 0
    values = labels32[foreground]
    if values.size == 0:
        return []
    # One pass over the foreground pixels gives every object's area (and score sum).
    areas = np.bincount(values)
    kept = areas >= max(min_area, 1)  # so every kept object has a box
    kept[0] = False
    ids = np.flatnonzero(kept)
    if ids.size == 0:
        return []
    if probability is None:
        scores = np.ones(ids.size)
    else:
        sums = np.bincount(values, weights=probability[foreground], minlength=areas.size)
        scores = sums[ids] / areas[ids]
    slices = ndimage.find_objects(labels32, max_label=int(ids[-1]))
    if mode == "polygon":
        outlines = _outlines(labels32, foreground, kept, areas, ids, slices)
    else:
        outlines = {}
    metadata = dict(model_metadata or {})
    features = []
    for label, score in zip(ids.tolist(), scores.tolist(), strict=True):
        rows, cols = slices[label - 1]
        bbox = [cols.start, rows.start, cols.stop, rows.stop]
        geometry = outlines.get(label) or _box(bbox)
        properties: dict[str, Any] = {
            "imageGeometry": geometry,
            "imageBBox": bbox,
            "featureClasses": [{"iri": class_iri, "score": round(float(score), 6)}],
        }
        if metadata:
            properties["modelMetadata"] = metadata
        features.append({"type": "Feature", "geometry": None, "properties": properties})
    return features


def _box(bbox: list[int]) -> dict[str, Any]:
    minx, miny, maxx, maxy = bbox
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    return {"type": "Polygon", "coordinates": [ring]}


def _outlines(
    labels: npt.NDArray[np.int32],
    foreground: npt.NDArray[np.bool_],
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
    ensure_thread_env()  # else rasterio sets up a GDAL environment around every call
    boxes = [slices[label - 1] for label in ids.tolist()]
    sizes = [(rows.stop - rows.start, cols.stop - cols.start) for rows, cols in boxes]
    height, width, corners = _pack(sizes)
    if height * width <= MOSAIC_SHARE * labels.size:
        mosaic = np.zeros((height, width), dtype=np.int32)
        placed = zip(boxes, corners, sizes, strict=True)
        for place, ((rows, cols), (top, left), (box_height, box_width)) in enumerate(placed):
            window = mosaic[top : top + box_height, left : left + box_width]
            window[labels[rows, cols] == ids[place]] = place + 1
        traced = rasterio.features.shapes(mosaic, mask=mosaic > 0, connectivity=8)
        outlines: dict[int, dict[str, Any]] = {}
        for geometry, value in traced:
            place = int(value) - 1
            (rows, cols), (top, left) = boxes[place], corners[place]
            dx, dy = cols.start - left, rows.start - top
            moved = [[(x + dx, y + dy) for x, y in ring] for ring in geometry["coordinates"]]
            _keep_largest(outlines, int(ids[place]), {"type": "Polygon", "coordinates": moved})
        return outlines
    everything_kept = ids.size == np.count_nonzero(areas[1:])
    mask = foreground if everything_kept else kept[labels]
    outlines = {}
    for geometry, value in rasterio.features.shapes(labels, mask=mask, connectivity=8):
        _keep_largest(outlines, int(value), geometry)
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
