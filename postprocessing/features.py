"""Detections to output GeoJSON features: duplicate removal, geolocation, properties.

Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from postprocessing.detections import Detection
from postprocessing.nms import non_max_suppression, soft_non_max_suppression

FloatArray = npt.NDArray[np.float64]


class SensorModel(Protocol):
    """Maps image pixel coordinates to WGS84 longitude/latitude, vectorised."""

    def image_to_world(self, cols: FloatArray, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Return (lon, lat) arrays for pixel (col, row) arrays."""
        ...


@dataclass(frozen=True, slots=True)
class Distillation:
    """Duplicate removal parameters: ``method`` is NMS or SOFT_NMS."""

    method: str = "NMS"
    iou_threshold: float = 0.75
    sigma: float = 0.1
    skip_box_threshold: float = 0.0001


def suppress_duplicates(detections: list[Detection], params: Distillation) -> list[Detection]:
    """Remove duplicates per class (the best class IRI), keeping input order.

    With SOFT_NMS the best class of each kept feature gets the decayed ``score`` and its
    original score as ``rawScore``.
    """
    if not detections:
        return detections
    boxes = np.asarray(shapely.bounds([d.geometry for d in detections]), dtype=np.float64)
    scores = np.asarray([d.score for d in detections], dtype=np.float64)
    _, inverse = np.unique([d.label for d in detections], return_inverse=True)
    labels = inverse.astype(np.intp)
    if params.method != "SOFT_NMS":
        keep = non_max_suppression(boxes, scores, labels, params.iou_threshold)
        return [detections[i] for i in np.sort(keep)]
    kept, decayed = soft_non_max_suppression(
        boxes, scores, labels, params.sigma, params.skip_box_threshold
    )
    order = np.argsort(kept)
    return [_rescored(detections[kept[i]], float(decayed[i])) for i in order]


def _rescored(detection: Detection, score: float) -> Detection:
    if not detection.feature_classes:
        return detection
    classes = [dict(c) for c in detection.feature_classes]
    best = max(range(len(classes)), key=lambda i: float(classes[i].get("score", 1.0)))
    classes[best]["rawScore"] = float(classes[best].get("score", 1.0))
    classes[best]["score"] = score
    return Detection(detection.geometry, tuple(classes), detection.properties)


def geolocate(detections: list[Detection], sensor_model: SensorModel | None) -> list[BaseGeometry]:
    """World geometries of the detections (one vectorised call for all vertices).

    Without a sensor model the geometries stay in image pixels.
    """
    geometries = [d.geometry for d in detections]
    if sensor_model is None or not geometries:
        return geometries

    def to_world(xy: FloatArray) -> FloatArray:
        lons, lats = sensor_model.image_to_world(xy[:, 0], xy[:, 1])
        return np.column_stack((lons, lats))

    moved: list[BaseGeometry] = list(shapely.transform(geometries, to_world))
    return moved


def build_features(
    detections: list[Detection],
    sensor_model: SensorModel | None,
    *,
    inference_metadata: Mapping[str, Any],
    source_metadata: Mapping[str, Any] | None = None,
    extra_properties: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Output features: world geometry, bbox, pixel geometry and the documented properties."""
    world = geolocate(detections, sensor_model)
    centres = shapely.get_coordinates(shapely.centroid(world)) if world else np.empty((0, 2))
    features = []
    for detection, geometry, centre in zip(detections, world, centres, strict=True):
        properties: dict[str, Any] = dict(extra_properties or {})
        properties.update(detection.properties)
        properties.update(
            imageGeometry=mapping(detection.geometry),
            imageBBox=list(detection.geometry.bounds),
            featureClasses=list(detection.feature_classes),
            center_longitude=float(centre[0]),
            center_latitude=float(centre[1]),
            inferenceMetadata=dict(inference_metadata),
        )
        if source_metadata:
            properties["sourceMetadata"] = [dict(source_metadata)]
        features.append(
            {
                "type": "Feature",
                "geometry": mapping(geometry),
                "bbox": list(geometry.bounds),
                "properties": properties,
            }
        )
    return features


def nitf_source_metadata(tags: Mapping[str, str], location: str) -> dict[str, Any] | None:
    """``sourceMetadata`` of a NITF image from its header tags, or None for other images."""
    if "NITF_IDATIM" not in tags and "NITF_ICAT" not in tags:
        return None
    source_dt = None
    idatim = tags.get("NITF_IDATIM", "").strip()
    if idatim:
        try:
            source_dt = datetime.strptime(idatim, "%Y%m%d%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            source_dt = None
    return {
        "format": "NITF",
        "category": tags.get("NITF_ICAT", "").strip() or None,
        "sourceId": tags.get("NITF_FTITLE", "").strip() or None,
        "sourceDT": source_dt,
        "location": location,
    }


def feature_collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    """Wrap features in a GeoJSON FeatureCollection."""
    return {"type": "FeatureCollection", "features": features}
