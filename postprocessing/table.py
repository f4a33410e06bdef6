"""A compact, columnar store of detections for a whole image.

Millions of features must fit in memory between the tiles and the outputs, so each detection is
kept as its pixel box, score and label in numpy arrays, its pixel geometry as WKB and its model
properties as ready-made JSON; shapely objects exist only per tile and per output chunk.
Pure; no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detection as plain values, for building tables by hand."""

    geometry: BaseGeometry
    feature_classes: tuple[dict[str, Any], ...] = ()
    properties: dict[str, Any] = field(default_factory=dict)
    image_bbox: tuple[float, float, float, float] | None = None
    feature_id: str | int | None = None

    @property
    def score(self) -> float:
        """Highest class score (1.0 for a feature without classes)."""
        return best_class(list(self.feature_classes))[1]

    @property
    def label(self) -> str:
        """IRI of the best class ("" for a feature without classes)."""
        return best_class(list(self.feature_classes))[0]


def best_class(classes: list[dict[str, Any]]) -> tuple[str, float]:
    """IRI and score of the highest-scoring class; ("", 1.0) without classes."""
    best_iri, best_score = "", -np.inf
    for entry in classes:
        score = float(entry.get("score", 1.0))
        if score > best_score:
            best_iri, best_score = str(entry.get("iri", "")), score
    return (best_iri, best_score) if classes else ("", 1.0)


def _empty_boxes() -> FloatArray:
    return np.empty((0, 4), dtype=np.float64)


def _empty_scores() -> FloatArray:
    return np.empty(0, dtype=np.float64)


def _missing_boxes(count: int) -> FloatArray:
    return np.full((count, 4), np.nan, dtype=np.float64)


@dataclass(frozen=True)
class DetectionTable:
    """Detections in full-image pixels, one row per detection.

    Attributes:
        boxes: ``(N, 4)`` pixel bounds ``[minx, miny, maxx, maxy]`` of each geometry: what
            duplicate removal compares.
        scores: Best class score per detection (1.0 without classes).
        labels: Best class IRI per detection ("" without classes).
        geometries_wkb: Pixel geometry of each detection as WKB.
        classes_json: ``featureClasses`` of each detection as a JSON array.
        properties_json: The model's other properties as JSON object members (no braces),
            "" when there are none.
        image_bboxes: ``(N, 4)`` the model's own ``imageBBox`` in full-image pixels (it may
            differ from the geometry's bounds), a row of NaN where the model gave none. Empty
            (0 rows) in a table built without them: every row then has none.
        ids_json: The model's feature ``id`` as JSON (a string or a number), "" where it gave
            none. Empty in a table built without them.
        inference_times: When each detection's tile was answered (epoch seconds). Empty in a
            table built without them.
    """

    boxes: FloatArray = field(default_factory=_empty_boxes)
    scores: FloatArray = field(default_factory=_empty_scores)
    labels: list[str] = field(default_factory=list)
    geometries_wkb: list[bytes] = field(default_factory=list)
    classes_json: list[str] = field(default_factory=list)
    properties_json: list[str] = field(default_factory=list)
    image_bboxes: FloatArray = field(default_factory=_empty_boxes)
    ids_json: list[str] = field(default_factory=list)
    inference_times: FloatArray = field(default_factory=_empty_scores)

    def __len__(self) -> int:
        return len(self.labels)

    def model_bboxes(self) -> FloatArray:
        """The model's ``imageBBox`` per row (NaN rows where it gave none)."""
        if len(self.image_bboxes) == len(self):
            return self.image_bboxes
        return _missing_boxes(len(self))

    def model_ids(self) -> list[str]:
        """The model's ``id`` per row as JSON ("" where it gave none)."""
        return self.ids_json if len(self.ids_json) == len(self) else [""] * len(self)

    def times(self) -> FloatArray:
        """When each row's tile was answered (NaN where unknown)."""
        if len(self.inference_times) == len(self):
            return self.inference_times
        return np.full(len(self), np.nan, dtype=np.float64)

    def answered_at(self, when_s: float) -> DetectionTable:
        """The same rows, stamped as answered at ``when_s`` (epoch seconds)."""
        times = np.full(len(self), when_s, dtype=np.float64)
        return dataclasses.replace(self, inference_times=times)

    @classmethod
    def from_detections(cls, detections: list[Detection]) -> DetectionTable:
        """Store detections (already in full-image pixels)."""
        if not detections:
            return cls()
        geometries = [d.geometry for d in detections]
        return cls(
            boxes=np.asarray(shapely.bounds(geometries), dtype=np.float64).reshape(-1, 4),
            scores=np.asarray([d.score for d in detections], dtype=np.float64),
            labels=[d.label for d in detections],
            geometries_wkb=list(shapely.to_wkb(geometries)),
            classes_json=[
                json.dumps(list(d.feature_classes), separators=(",", ":")) for d in detections
            ],
            properties_json=[
                json.dumps(d.properties, separators=(",", ":"))[1:-1] if d.properties else ""
                for d in detections
            ],
            image_bboxes=np.asarray(
                [d.image_bbox or (np.nan,) * 4 for d in detections], dtype=np.float64
            ).reshape(-1, 4),
            ids_json=["" if d.feature_id is None else json.dumps(d.feature_id) for d in detections],
        )

    @classmethod
    def concat(cls, tables: list[DetectionTable]) -> DetectionTable:
        """One table with the rows of all ``tables``, in order."""
        tables = [t for t in tables if len(t)]
        if not tables:
            return cls()
        if len(tables) == 1:
            return tables[0]
        return cls(
            boxes=np.concatenate([t.boxes for t in tables]),
            scores=np.concatenate([t.scores for t in tables]),
            labels=[label for t in tables for label in t.labels],
            geometries_wkb=[g for t in tables for g in t.geometries_wkb],
            classes_json=[c for t in tables for c in t.classes_json],
            properties_json=[p for t in tables for p in t.properties_json],
            image_bboxes=np.concatenate([t.model_bboxes() for t in tables]),
            ids_json=[i for t in tables for i in t.model_ids()],
            inference_times=np.concatenate([t.times() for t in tables]),
        )

    def take(self, rows: IntArray) -> DetectionTable:
        """A table of the given rows, in that order."""
        picked = rows.tolist()
        ids = self.model_ids()
        return DetectionTable(
            boxes=self.boxes[rows],
            scores=self.scores[rows],
            labels=[self.labels[i] for i in picked],
            geometries_wkb=[self.geometries_wkb[i] for i in picked],
            classes_json=[self.classes_json[i] for i in picked],
            properties_json=[self.properties_json[i] for i in picked],
            image_bboxes=self.model_bboxes()[rows],
            ids_json=[ids[i] for i in picked],
            inference_times=self.times()[rows],
        )

    def label_codes(self) -> IntArray:
        """Integer codes of the labels (equal labels, equal codes)."""
        if not self.labels:
            return np.empty(0, dtype=np.intp)
        _, codes = np.unique(np.asarray(self.labels, dtype=object), return_inverse=True)
        return codes.astype(np.intp)


def _pack(items: list[bytes]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    lengths = np.fromiter((len(i) for i in items), dtype=np.int64, count=len(items))
    return np.frombuffer(b"".join(items), dtype=np.uint8), lengths


def _unpack(blob: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64]) -> list[bytes]:
    data = blob.tobytes()
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]] if ends else []
    return [data[s:e] for s, e in zip(starts, ends, strict=True)]


_TEXT_COLUMNS = ("labels", "classes_json", "properties_json")


def table_arrays(table: DetectionTable) -> dict[str, npt.NDArray[Any]]:
    """The table as plain numpy arrays (no pickled objects), e.g. for ``numpy.savez``."""
    arrays: dict[str, npt.NDArray[Any]] = {
        "boxes": table.boxes,
        "scores": table.scores,
        "image_bboxes": table.model_bboxes(),
        "inference_times": table.times(),
    }
    columns: dict[str, list[bytes]] = {
        name: [s.encode() for s in getattr(table, name)] for name in _TEXT_COLUMNS
    }
    columns["ids_json"] = [s.encode() for s in table.model_ids()]
    columns["geometries_wkb"] = table.geometries_wkb
    for name, items in columns.items():
        arrays[f"{name}.data"], arrays[f"{name}.lengths"] = _pack(items)
    return arrays


def table_from_arrays(arrays: Any) -> DetectionTable:
    """The table :func:`table_arrays` stored (``arrays`` maps names to arrays, as npz does).

    Arrays written before the model's boxes, ids and times were kept may lack them: those rows
    then have none.

    Raises:
        ValueError: If the arrays are inconsistent.
        KeyError: If an array is missing.
    """
    boxes = np.asarray(arrays["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(arrays["scores"], dtype=np.float64)
    names = [*_TEXT_COLUMNS, "geometries_wkb"]
    if "ids_json.data" in arrays:
        names.append("ids_json")
    columns = {name: _unpack(arrays[f"{name}.data"], arrays[f"{name}.lengths"]) for name in names}
    optional = {
        "image_bboxes": np.asarray(arrays["image_bboxes"], dtype=np.float64).reshape(-1, 4)
        if "image_bboxes" in arrays
        else _empty_boxes(),
        "inference_times": np.asarray(arrays["inference_times"], dtype=np.float64)
        if "inference_times" in arrays
        else _empty_scores(),
    }
    lengths = {len(c) for c in columns.values()} | {len(boxes)}
    lengths |= {len(a) for a in optional.values() if len(a)}
    if lengths - {len(scores)}:
        raise ValueError("staged detection columns differ in length")
    return DetectionTable(
        boxes=boxes,
        scores=scores,
        labels=[b.decode() for b in columns["labels"]],
        geometries_wkb=columns["geometries_wkb"],
        classes_json=[b.decode() for b in columns["classes_json"]],
        properties_json=[b.decode() for b in columns["properties_json"]],
        image_bboxes=optional["image_bboxes"],
        ids_json=[b.decode() for b in columns.get("ids_json", [])],
        inference_times=optional["inference_times"],
    )
