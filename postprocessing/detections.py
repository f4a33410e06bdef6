"""Model replies to detections: parse a tile's FeatureCollection into a table in image pixels.

Pure functions; no I/O. Reads the current property names (``imageGeometry``, ``imageBBox``,
``featureClasses``) and the older ones (``geom_imcoords``, ``bounds_imcoords``,
``detection.pixelCoordinates``, ``feature_types``). Single-ring polygons, what detectors send,
are built in one vectorised call; other geometries one by one.

The model's ``imageBBox`` (its detection box, which may differ from the outline's bounds) and
its feature ``id`` are kept beside the geometry. Duplicate removal compares the geometries'
bounds, as the reference implementation does.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from postprocessing.errors import ModelOutputError
from postprocessing.table import DetectionTable, best_class

# Keys the worker sets itself (from the model's values where it gave them), and the legacy and
# transient keys the reference implementation removes from its output; every other property of
# the model reaches the output unchanged.
WORKER_KEYS = frozenset(
    {
        "imageGeometry",
        "imageBBox",
        "featureClasses",
        "center_longitude",
        "center_latitude",
        "inferenceMetadata",
    }
)
_DERIVED_KEYS = WORKER_KEYS | frozenset(
    {
        # removed by the reference as well
        "geom_imcoords",
        "bounds_imcoords",
        "feature_types",
        "detection_score",
        "adjusted_feature_types",
        "image_id",
        "inferenceTime",
    }
)
_BOX_SIZE = 4
_MIN_RING_POINTS = 4

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

log = logging.getLogger(__name__)


class _Columns:
    """Per-feature values gathered while reading a reply."""

    def __init__(self, count: int) -> None:
        self.geometries = np.empty(count, dtype=object)
        self.ring_rows: list[int] = []
        self.rings: list[FloatArray] = []
        self.scores = np.empty(count, dtype=np.float64)
        self.labels: list[str] = []
        self.classes_json: list[str] = []
        self.properties_json: list[str] = []
        self.image_bboxes = np.full((count, 4), np.nan, dtype=np.float64)
        self.ids_json: list[str] = []
        self._strings: dict[str, str] = {}

    def shared(self, text: str) -> str:
        """One string object for equal texts (labels and properties repeat a lot)."""
        return self._strings.setdefault(text, text)


def parse_model_output(
    body: bytes | str,
    col_off: int = 0,
    row_off: int = 0,
    tile_size: tuple[int, int] | None = None,
    max_features: int | None = None,
) -> DetectionTable:
    """Parse a model's reply for the tile at (``col_off``, ``row_off``).

    With ``tile_size`` (width, height), features whose pixel bounds are not finite or reach
    further than one tile beyond the tile's edges are dropped, with a count in the log: a model
    that answers nonsense loses those features, not the tile.

    Returns:
        The detections with geometries moved to full-image pixels.

    Raises:
        ModelOutputError: If the reply is not a FeatureCollection, has more than
            ``max_features`` features, or a feature has no usable pixel geometry or classes.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ModelOutputError(f"model reply is not JSON: {err}") from err
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise ModelOutputError("model reply is not a GeoJSON FeatureCollection")
    features = document.get("features") or []
    if not isinstance(features, list):
        raise ModelOutputError("model reply 'features' is not a list")
    if max_features is not None and len(features) > max_features:
        raise ModelOutputError(
            f"model reply has {len(features)} features, more than {max_features} for one tile"
        )
    columns = _Columns(len(features))
    for index, feature in enumerate(features):
        _read_feature(columns, index, feature)
    geometries = _build_geometries(columns)
    keep = _plausible(geometries, tile_size) if tile_size is not None and len(features) else None
    if col_off or row_off:
        offset = np.array((col_off, row_off), dtype=np.float64)
        geometries = shapely.transform(geometries, lambda xy: xy + offset)
        columns.image_bboxes += np.tile(offset, 2)
    if len(features) and shapely.is_empty(geometries).any():
        raise ModelOutputError("a feature has an empty pixel geometry")
    table = DetectionTable(
        boxes=np.asarray(shapely.bounds(geometries), dtype=np.float64).reshape(-1, 4),
        scores=columns.scores,
        labels=columns.labels,
        geometries_wkb=list(shapely.to_wkb(geometries)),
        classes_json=columns.classes_json,
        properties_json=columns.properties_json,
        image_bboxes=columns.image_bboxes,
        ids_json=columns.ids_json,
    )
    if keep is not None and not keep.all():
        log.warning(
            "model reply for the tile at (%d, %d): %d of %d features dropped (coordinates not"
            " finite or more than a tile outside it)",
            col_off,
            row_off,
            int((~keep).sum()),
            len(keep),
        )
        table = table.take(np.flatnonzero(keep))
    return table


def _plausible(geometries: npt.NDArray[np.object_], tile_size: tuple[int, int]) -> BoolArray:
    """Rows whose tile-pixel bounds are finite and lie within one tile around the tile."""
    bounds = np.asarray(shapely.bounds(geometries), dtype=np.float64).reshape(-1, 4)
    width, height = tile_size
    finite = np.isfinite(bounds).all(axis=1)
    with np.errstate(invalid="ignore"):
        inside = (
            (bounds[:, 0] >= -width)
            & (bounds[:, 2] <= 2 * width)
            & (bounds[:, 1] >= -height)
            & (bounds[:, 3] <= 2 * height)
        )
    result: BoolArray = finite & inside
    return result


def _read_feature(columns: _Columns, index: int, feature: Any) -> None:
    if not isinstance(feature, dict):
        raise ModelOutputError(f"feature {index} is not an object")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise ModelOutputError(f"feature {index}: properties is not an object")
    box = _model_bbox(index, properties)
    if box is not None:
        columns.image_bboxes[index] = box
    ring = _single_ring(properties.get("imageGeometry"))
    if ring is not None:
        columns.ring_rows.append(index)
        columns.rings.append(ring)
    else:
        columns.geometries[index] = _pixel_geometry(index, properties)
    classes = properties.get("featureClasses")
    if classes is None:
        classes = _legacy_classes(properties.get("feature_types"))
    if not isinstance(classes, list) or not all(isinstance(c, dict) for c in classes):
        raise ModelOutputError(f"feature {index}: featureClasses is not a list of objects")
    try:
        label, score = best_class(classes)
    except (TypeError, ValueError) as err:
        raise ModelOutputError(f"feature {index}: a class score is not a number") from err
    columns.scores[index] = score
    columns.labels.append(columns.shared(label))
    columns.classes_json.append(columns.shared(orjson.dumps(classes).decode()))
    kept = {k: v for k, v in properties.items() if k not in _DERIVED_KEYS}
    members = orjson.dumps(kept).decode()[1:-1] if kept else ""
    columns.properties_json.append(columns.shared(members))
    columns.ids_json.append(_feature_id(index, feature.get("id")))


def _model_bbox(index: int, properties: dict[str, Any]) -> tuple[float, ...] | None:
    """The model's detection box (``imageBBox``, or the legacy ``bounds_imcoords``)."""
    box = properties.get("imageBBox")
    if box is None:
        box = properties.get("bounds_imcoords")
    if box is None:
        return None
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise ModelOutputError(f"feature {index}: imageBBox must be 4 numbers: {err}") from err
    if len(values) != _BOX_SIZE:
        raise ModelOutputError(
            f"feature {index}: imageBBox must be 4 numbers [minx, miny, maxx, maxy],"
            f" got {len(values)}"
        )
    return values


def _feature_id(index: int, value: Any) -> str:
    """The model's feature ``id`` as JSON, "" without one (GeoJSON: a string or a number)."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ModelOutputError(f"feature {index}: id must be a string or a number")
    return orjson.dumps(value).decode()


def _single_ring(geometry: Any) -> FloatArray | None:
    """The ring of a one-ring Polygon as an (n, 2) array, or None for anything else."""
    if not isinstance(geometry, dict) or geometry.get("type") != "Polygon":
        return None
    rings = geometry.get("coordinates")
    if not isinstance(rings, list) or len(rings) != 1:
        return None
    try:
        ring = np.asarray(rings[0], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if ring.ndim != 2 or ring.shape[1] != 2 or ring.shape[0] < _MIN_RING_POINTS:  # noqa: PLR2004
        return None
    return ring


def _build_geometries(columns: _Columns) -> npt.NDArray[np.object_]:
    if columns.rings:
        sizes = [ring.shape[0] for ring in columns.rings]
        ring_ids = np.repeat(np.arange(len(sizes)), sizes)
        try:
            rings = shapely.linearrings(np.concatenate(columns.rings), indices=ring_ids)
        except shapely.errors.GEOSException as err:
            raise ModelOutputError(f"invalid polygon ring: {err}") from err
        columns.geometries[columns.ring_rows] = shapely.polygons(rings)
    return columns.geometries


def _legacy_classes(feature_types: Any) -> list[dict[str, Any]]:
    if isinstance(feature_types, dict):
        return [{"iri": str(k), "score": v} for k, v in feature_types.items()]
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
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        shapely.errors.ShapelyError,
    ) as err:
        raise ModelOutputError(f"feature {index}: invalid pixel geometry: {err}") from err
    raise ModelOutputError(
        f"feature {index}: no pixel geometry (imageGeometry, imageBBox or a legacy name)"
    )
