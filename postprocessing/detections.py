"""Model replies to detections: parse the FeatureCollection and shift it to image pixels.

Pure functions; no I/O. Reads the current property names (``imageGeometry``, ``imageBBox``,
``featureClasses``) and the older ones (``geom_imcoords``, ``bounds_imcoords``,
``detection.pixelCoordinates``, ``feature_types``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from postprocessing.errors import ModelOutputError

# Keys the worker derives itself; a model's values for them are not copied to the output.
_DERIVED_KEYS = frozenset(
    {
        "imageGeometry",
        "imageBBox",
        "featureClasses",
        "geom_imcoords",
        "bounds_imcoords",
        "detection",
        "feature_types",
        "center_longitude",
        "center_latitude",
        "inferenceMetadata",
        "image_id",
    }
)


@dataclass(frozen=True, slots=True)
class Detection:
    """One feature found by a model, its geometry in pixels (tile or full image)."""

    geometry: BaseGeometry
    feature_classes: tuple[dict[str, Any], ...] = ()
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Highest class score (1.0 for a feature without classes)."""
        scores = [float(c.get("score", 1.0)) for c in self.feature_classes]
        return max(scores, default=1.0)

    @property
    def label(self) -> str:
        """IRI of the best class ("" for a feature without classes)."""
        if not self.feature_classes:
            return ""
        best = max(self.feature_classes, key=lambda c: float(c.get("score", 1.0)))
        return str(best.get("iri", ""))


def parse_model_output(body: bytes | str) -> list[Detection]:
    """Parse a model's reply into detections in tile pixels.

    Raises:
        ModelOutputError: If the reply is not a FeatureCollection or a feature has no
            pixel geometry.
    """
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelOutputError(f"model reply is not JSON: {err}") from err
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise ModelOutputError("model reply is not a GeoJSON FeatureCollection")
    features = document.get("features") or []
    if not isinstance(features, list):
        raise ModelOutputError("model reply 'features' is not a list")
    return [_parse_feature(i, feature) for i, feature in enumerate(features)]


def _parse_feature(index: int, feature: Any) -> Detection:
    if not isinstance(feature, dict):
        raise ModelOutputError(f"feature {index} is not an object")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise ModelOutputError(f"feature {index}: properties is not an object")
    geometry = _pixel_geometry(index, properties)
    if geometry.is_empty:
        raise ModelOutputError(f"feature {index}: empty pixel geometry")
    classes = properties.get("featureClasses")
    if classes is None:
        classes = _legacy_classes(properties.get("feature_types"))
    if not isinstance(classes, list) or not all(isinstance(c, dict) for c in classes):
        raise ModelOutputError(f"feature {index}: featureClasses is not a list of objects")
    kept = {k: v for k, v in properties.items() if k not in _DERIVED_KEYS}
    return Detection(geometry=geometry, feature_classes=tuple(classes), properties=kept)


def _legacy_classes(feature_types: Any) -> list[dict[str, Any]]:
    if isinstance(feature_types, dict):
        return [{"iri": str(k), "score": float(v)} for k, v in feature_types.items()]
    return []


def _pixel_geometry(index: int, properties: dict[str, Any]) -> BaseGeometry:
    try:
        if isinstance(properties.get("imageGeometry"), dict):
            return shape(properties["imageGeometry"])
        detection = properties.get("detection")
        if isinstance(detection, dict) and "pixelCoordinates" in detection:
            return shapely.Polygon(detection["pixelCoordinates"])
        if "geom_imcoords" in properties:
            return shapely.Polygon(properties["geom_imcoords"])
        box = properties.get("imageBBox", properties.get("bounds_imcoords"))
        if box is not None:
            minx, miny, maxx, maxy = (float(v) for v in box)
            return shapely.box(minx, miny, maxx, maxy)
    except (ValueError, TypeError, KeyError, AttributeError, shapely.errors.ShapelyError) as err:
        raise ModelOutputError(f"feature {index}: invalid pixel geometry: {err}") from err
    raise ModelOutputError(
        f"feature {index}: no pixel geometry (imageGeometry, imageBBox or a legacy name)"
    )


def shift_detections(detections: list[Detection], col_off: int, row_off: int) -> list[Detection]:
    """Move detections from tile pixels to full-image pixels (one vectorised call)."""
    if not detections or (col_off == 0 and row_off == 0):
        return detections
    geometries = [d.geometry for d in detections]
    offset = np.array((col_off, row_off), dtype=np.float64)
    moved = shapely.transform(geometries, lambda xy: xy + offset)
    return [
        Detection(geometry=g, feature_classes=d.feature_classes, properties=d.properties)
        for g, d in zip(moved, detections, strict=True)
    ]
