"""Detections to output GeoJSON features: duplicate removal, geolocation, properties.

Pure functions; no I/O. Features are produced as JSON text in chunks, so an image's output is
never one document in memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from postprocessing.detections import WORKER_KEYS
from postprocessing.nms import non_max_suppression, soft_non_max_suppression
from postprocessing.overlap import in_overlap_bands
from postprocessing.properties import inference_dt, stable_feature_id
from postprocessing.table import DetectionTable

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

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
    """What every feature of an image shares.

    Attributes:
        sensor_model: Pixel to world mapping; None leaves features in pixel space.
        inference_metadata: ``inferenceMetadata`` of every feature (``jobId``; an
            ``inferenceDT`` here stands in for rows whose tile time is unknown).
        source_metadata: ``sourceMetadata`` of a NITF image.
        extra_properties: The request's ``featureProperties``: set last, so they win over
            every other property of the same name, as in the reference implementation.
        image_id: ``<jobId>:<imageUrl>``; seeds the ids of features the model gave none.
    """

    sensor_model: SensorModel | None
    inference_metadata: Mapping[str, Any]
    source_metadata: Mapping[str, Any] | None = None
    extra_properties: Mapping[str, Any] | None = None
    image_id: str = ""


# Properties the worker writes itself; request featureProperties of these names replace them.
_OWN_KEYS = WORKER_KEYS | {"sourceMetadata"}


def _world_boxes(
    table: DetectionTable, rows: IntArray, world: npt.NDArray[np.object_], context: FeatureContext
) -> tuple[FloatArray, FloatArray]:
    """Pixel ``imageBBox`` and lon/lat ``bbox`` per row: the model's box where it gave one
    (its corners geolocated), else the geometry's bounds."""
    pixel = table.model_bboxes()[rows]
    given: BoolArray = np.asarray(np.isfinite(pixel).all(axis=1), dtype=np.bool_)
    pixel = np.where(given[:, None], pixel, table.boxes[rows])
    world_bounds = np.asarray(shapely.bounds(world), dtype=np.float64).reshape(-1, 4)
    if given.any():
        corners = np.asarray(shapely.box(*pixel[given].T), dtype=object)
        world_bounds[given] = shapely.bounds(geolocate(corners, context.sensor_model))
    return pixel, world_bounds


class _Stamps:
    """``inferenceMetadata`` members per second of tile time, made once each."""

    def __init__(self, context: FeatureContext) -> None:
        self._base = dict(context.inference_metadata)
        self._by_second: dict[int, str] = {}

    def members(self, when_s: float) -> str:
        if not math.isfinite(when_s):
            return '"inferenceMetadata":' + json.dumps(self._base)
        second = int(when_s)
        text = self._by_second.get(second)
        if text is None:
            metadata = {**self._base, "inferenceDT": inference_dt(second)}
            text = self._by_second[second] = '"inferenceMetadata":' + json.dumps(metadata)
        return text


def feature_chunks(
    table: DetectionTable,
    selection: Selection,
    context: FeatureContext,
    chunk_features: int = DEFAULT_CHUNK_FEATURES,
) -> Iterator[list[str]]:
    """GeoJSON Feature texts for the selected rows, ``chunk_features`` at a time.

    Each feature has the model's ``id`` (or :func:`stable_feature_id`), its world ``geometry``,
    and a ``bbox`` from the model's ``imageBBox``. Properties, in order of precedence (later
    wins): the model's own properties; ``imageGeometry``, ``imageBBox``, ``featureClasses``,
    ``center_longitude``/``center_latitude``, ``inferenceMetadata`` and ``sourceMetadata``;
    then the request's ``featureProperties``.
    """
    source = ""
    if context.source_metadata:
        source = ',"sourceMetadata":' + json.dumps([dict(context.source_metadata)])
    extra = dict(context.extra_properties or {})
    extra_members = "," + json.dumps(extra)[1:-1] if extra else ""
    stamps = _Stamps(context)
    ids, times = table.model_ids(), table.times()
    for start in range(0, selection.rows.size, chunk_features):
        rows = selection.rows[start : start + chunk_features]
        scores = None if selection.scores is None else selection.scores[start : start + rows.size]
        pixel = shapely.from_wkb([table.geometries_wkb[i] for i in rows.tolist()])
        world = geolocate(pixel, context.sensor_model)
        world_json = shapely.to_geojson(world)
        pixel_json = shapely.to_geojson(pixel)
        image_boxes, world_boxes = _world_boxes(table, rows, world, context)
        centres = _centres(pixel, context.sensor_model)
        chunk = []
        for k, row in enumerate(rows.tolist()):
            classes = table.classes_json[row]
            if scores is not None and scores[k] != table.scores[row]:
                classes = _rescored_classes(classes, float(scores[k]))
            own = (
                f'"imageGeometry":{pixel_json[k]},"imageBBox":[{_numbers(image_boxes[k])}],'
                f'"featureClasses":{classes},"center_longitude":{_num(centres[k, 0])},'
                f'"center_latitude":{_num(centres[k, 1])},{stamps.members(times[row])}'
            )
            properties = _properties(table.properties_json[row], own, extra_members + source, extra)
            feature_id = ids[row] or json.dumps(
                stable_feature_id(
                    context.image_id, table.geometries_wkb[row], table.classes_json[row]
                )
            )
            chunk.append(
                f'{{"type":"Feature","id":{feature_id},"geometry":{world_json[k]},'
                f'"bbox":[{_numbers(world_boxes[k])}],"properties":{properties}}}'
            )
        yield chunk


def _properties(model_json: str, own: str, last: str, extra: dict[str, Any]) -> str:
    """The properties object: the model's, the worker's ``own``, then ``last`` (the request's
    featureProperties and a NITF's sourceMetadata, as members with a leading comma).

    Built as text when no two parts share a key (the common case); otherwise merged so the
    later part wins, as a JSON object must not repeat a key.
    """
    text = "{" + (f"{model_json}," if model_json else "") + own + last + "}"
    if not _may_repeat(model_json, last, extra):
        return text
    return json.dumps(json.loads(text, object_pairs_hook=_last_wins), separators=(",", ":"))


def _may_repeat(model_json: str, last: str, extra: dict[str, Any]) -> bool:
    """Whether a key may appear twice (a cheap text check; a false alarm only costs a merge)."""
    source = '"sourceMetadata":'
    if source in last and (source in model_json or "sourceMetadata" in extra):
        return True
    return any(key in _OWN_KEYS or f"{json.dumps(key)}:" in model_json for key in extra)


def _centres(pixel: npt.NDArray[np.object_], sensor_model: SensorModel | None) -> FloatArray:
    """``center_longitude``/``center_latitude``: each pixel geometry's centroid, geolocated
    (as the reference does; for a non-linear sensor model this differs from the centroid of
    the world geometry)."""
    xy = shapely.get_coordinates(shapely.centroid(pixel))
    if sensor_model is None or not len(xy):
        return xy
    lons, lats = sensor_model.image_to_world(xy[:, 0], xy[:, 1])
    return np.column_stack((lons, lats))


def _last_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key, value in pairs:
        merged.pop(key, None)  # the winning value takes the later position
        merged[key] = value
    return merged


def _rescored_classes(classes_json: str, score: float) -> str:
    classes = json.loads(classes_json)
    if not classes:
        return classes_json
    best = max(range(len(classes)), key=lambda i: float(classes[i].get("score", 1.0)))
    classes[best]["rawScore"] = float(classes[best].get("score", 1.0))
    classes[best]["score"] = score
    return json.dumps(classes, separators=(",", ":"))
