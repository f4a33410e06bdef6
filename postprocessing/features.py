"""Detections to output GeoJSON features: duplicate removal, geolocation, properties.

Pure functions; no I/O. Features are produced as JSON text in chunks, so an image's output is
never one document in memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from postprocessing.nms import non_max_suppression, soft_non_max_suppression
from postprocessing.overlap import in_overlap_bands
from postprocessing.table import DetectionTable

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

DEFAULT_CHUNK_FEATURES = 5000


class SensorModel(Protocol):
    """Maps image pixel coordinates to WGS84 longitude/latitude, vectorised."""

    def image_to_world(self, cols: FloatArray, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Return (lon, lat) arrays for pixel (col, row) arrays."""
        ...

    def heights(self, lons: FloatArray, lats: FloatArray) -> FloatArray:
        """Heights (metres) of the ground points at ``lons/lats``."""
        ...


@dataclass(frozen=True, slots=True)
class Distillation:
    """Duplicate removal parameters: ``method`` is NMS or SOFT_NMS."""

    method: str = "NMS"
    iou_threshold: float = 0.75
    sigma: float = 0.1
    skip_box_threshold: float = 0.0001


@dataclass(frozen=True)
class TileLayout:
    """The tile grid the detections came from: origins per axis and the tile size."""

    col_origins: IntArray
    row_origins: IntArray
    tile_width_px: int
    tile_height_px: int


@dataclass(frozen=True)
class Selection:
    """Rows of a table to output; ``scores`` holds Soft-NMS scores for those rows."""

    rows: IntArray
    scores: FloatArray | None = None


def suppress_duplicates(
    table: DetectionTable, params: Distillation | None, layout: TileLayout | None = None
) -> Selection:
    """Remove duplicates per class (the best class IRI).

    With a ``layout`` only detections in tile overlap bands are compared (the others cannot
    be duplicates); without one every detection is. With SOFT_NMS the kept rows carry their
    decayed scores.
    """
    count = len(table)
    if params is None or count < 2:  # noqa: PLR2004
        return Selection(np.arange(count, dtype=np.intp))
    if layout is None:
        candidates = np.ones(count, dtype=bool)
    else:
        candidates = in_overlap_bands(
            table.boxes,
            layout.col_origins,
            layout.row_origins,
            layout.tile_width_px,
            layout.tile_height_px,
        )
    index = np.flatnonzero(candidates)
    boxes, scores, labels = table.boxes[index], table.scores[index], table.label_codes()[index]
    if params.method == "SOFT_NMS":
        kept, decayed = soft_non_max_suppression(
            boxes, scores, labels, params.sigma, params.skip_box_threshold
        )
        all_scores = table.scores.copy()
        all_scores[index] = -np.inf
        all_scores[index[kept]] = decayed
        rows = np.flatnonzero(all_scores >= params.skip_box_threshold)
        return Selection(rows, all_scores[rows])
    kept = non_max_suppression(boxes, scores, labels, params.iou_threshold)
    keep = ~candidates
    keep[index[kept]] = True
    return Selection(np.flatnonzero(keep))


def rows_in_region(table: DetectionTable, region: BaseGeometry) -> IntArray:
    """Rows whose pixel geometry intersects the region (bounding boxes checked first)."""
    if not len(table):
        return np.empty(0, dtype=np.intp)
    minx, miny, maxx, maxy = region.bounds
    boxes = table.boxes
    near = np.flatnonzero(
        (boxes[:, 0] <= maxx)
        & (boxes[:, 2] >= minx)
        & (boxes[:, 1] <= maxy)
        & (boxes[:, 3] >= miny)
    )
    geometries = shapely.from_wkb([table.geometries_wkb[i] for i in near.tolist()])
    shapely.prepare(region)
    inside: IntArray = near[shapely.intersects(region, geometries)]
    return inside


def geolocate(
    geometries: npt.NDArray[np.object_], sensor_model: SensorModel | None
) -> npt.NDArray[np.object_]:
    """World geometries with (lon, lat, elevation) vertices, one vectorised call for all of
    them; the pixel geometries themselves without a model."""
    if sensor_model is None or geometries.size == 0:
        return geometries

    def to_world(xyz: FloatArray) -> FloatArray:
        lons, lats = sensor_model.image_to_world(xyz[:, 0], xyz[:, 1])
        return np.column_stack((lons, lats, sensor_model.heights(lons, lats)))

    flat_to_3d = shapely.force_3d(geometries)
    moved: npt.NDArray[np.object_] = shapely.transform(flat_to_3d, to_world, include_z=True)
    return moved


def _num(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else "null"


def _numbers(values: FloatArray) -> str:
    return ",".join(_num(v) for v in values.tolist())


@dataclass(frozen=True)
class FeatureContext:
    """What every feature of an image shares."""

    sensor_model: SensorModel | None
    inference_metadata: Mapping[str, Any]
    source_metadata: Mapping[str, Any] | None = None
    extra_properties: Mapping[str, Any] | None = None


def feature_chunks(
    table: DetectionTable,
    selection: Selection,
    context: FeatureContext,
    chunk_features: int = DEFAULT_CHUNK_FEATURES,
) -> Iterator[list[str]]:
    """GeoJSON Feature texts for the selected rows, ``chunk_features`` at a time.

    Properties, in order of precedence (later wins): the request's featureProperties, the
    model's own properties, then ``imageGeometry``, ``imageBBox``, ``featureClasses``,
    ``center_longitude``/``center_latitude``, ``inferenceMetadata`` and ``sourceMetadata``.
    """
    shared = '"inferenceMetadata":' + json.dumps(dict(context.inference_metadata))
    if context.source_metadata:
        shared += ',"sourceMetadata":' + json.dumps([dict(context.source_metadata)])
    extra = dict(context.extra_properties or {})
    for start in range(0, selection.rows.size, chunk_features):
        rows = selection.rows[start : start + chunk_features]
        scores = None if selection.scores is None else selection.scores[start : start + rows.size]
        pixel = shapely.from_wkb([table.geometries_wkb[i] for i in rows.tolist()])
        world = geolocate(pixel, context.sensor_model)
        world_json = shapely.to_geojson(world)
        pixel_json = shapely.to_geojson(pixel)
        world_bounds = shapely.bounds(world)
        centres = shapely.get_coordinates(shapely.centroid(world))
        chunk = []
        for k, row in enumerate(rows.tolist()):
            classes = table.classes_json[row]
            if scores is not None and scores[k] != table.scores[row]:
                classes = _rescored_classes(classes, float(scores[k]))
            members = _model_members(table.properties_json[row], extra)
            chunk.append(
                f'{{"type":"Feature","geometry":{world_json[k]},'
                f'"bbox":[{_numbers(world_bounds[k])}],"properties":{{{members}'
                f'"imageGeometry":{pixel_json[k]},"imageBBox":[{_numbers(table.boxes[row])}],'
                f'"featureClasses":{classes},"center_longitude":{_num(centres[k, 0])},'
                f'"center_latitude":{_num(centres[k, 1])},{shared}}}}}'
            )
        yield chunk


def _model_members(model_json: str, extra: dict[str, Any]) -> str:
    """The request's and the model's properties as JSON members with a trailing comma."""
    if not extra:
        return f"{model_json}," if model_json else ""
    if not model_json:
        return json.dumps(extra)[1:-1] + ","
    merged = {**extra, **json.loads("{" + model_json + "}")}
    return json.dumps(merged)[1:-1] + ","


def _rescored_classes(classes_json: str, score: float) -> str:
    classes = json.loads(classes_json)
    if not classes:
        return classes_json
    best = max(range(len(classes)), key=lambda i: float(classes[i].get("score", 1.0)))
    classes[best]["rawScore"] = float(classes[best].get("score", 1.0))
    classes[best]["score"] = score
    return json.dumps(classes, separators=(",", ":"))


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
