"""From a model's per-pixel output to ModelRunner features.

Segmentation models answer with maps, not objects: a probability (or foreground) map is
thresholded and split into connected components (8-connected), a label image is taken as it
is. Each object becomes one feature in tile pixels: its outline (``rasterio.features.shapes``)
or, faster, its bounding box, with a score (the mean probability inside it, 1.0 for a label
image) and the class the request names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio.features
from scipy import ndimage

GeometryMode = Literal["polygon", "bbox"]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


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
    kept = areas >= min_area
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
        everything_kept = ids.size == np.count_nonzero(areas[1:])
        mask = foreground if everything_kept else kept[labels32]
        outlines = _outlines(labels32, mask)
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
    labels: npt.NDArray[np.int32], mask: npt.NDArray[np.bool_]
) -> dict[int, dict[str, Any]]:
    """The outline (with holes) of each object under ``mask``, as GeoJSON Polygons in pixels."""
    outlines: dict[int, dict[str, Any]] = {}
    for geometry, value in rasterio.features.shapes(labels, mask=mask, connectivity=8):
        label = int(value)
        # An 8-connected object is one shape; keep the largest if a label was split.
        if label not in outlines or _ring_area(geometry) > _ring_area(outlines[label]):
            outlines[label] = {"type": "Polygon", "coordinates": geometry["coordinates"]}
    return outlines


def _ring_area(geometry: Mapping[str, Any]) -> float:
    ring = np.asarray(geometry["coordinates"][0], dtype=np.float64)
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def feature_collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    """The reply ModelRunner expects."""
    return {"type": "FeatureCollection", "features": features}
