"""Detections to output GeoJSON features: duplicate removal, geolocation, properties.

Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from postprocessing.detections import Detection
from postprocessing.nms import non_max_suppression

FloatArray = npt.NDArray[np.float64]


class SensorModel(Protocol):
    """Maps image pixel coordinates to WGS84 longitude/latitude, vectorised."""

    def image_to_world(self, cols: FloatArray, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Return (lon, lat) arrays for pixel (col, row) arrays."""
        ...


def suppress_duplicates(detections: list[Detection], iou_threshold: float) -> list[Detection]:
    """Remove duplicates with NMS per class (the best class IRI), keeping input order."""
    if len(detections) < 2:  # noqa: PLR2004
        return detections
    boxes = np.asarray(shapely.bounds([d.geometry for d in detections]), dtype=np.float64)
    scores = np.asarray([d.score for d in detections], dtype=np.float64)
    _, labels = np.unique([d.label for d in detections], return_inverse=True)
    keep = non_max_suppression(boxes, scores, labels.astype(np.intp), iou_threshold)
    return [detections[i] for i in np.sort(keep)]


def geolocate(
    detections: list[Detection], sensor_model: SensorModel | None
) -> list[BaseGeometry]:
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
