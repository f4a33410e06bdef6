"""A compact, columnar store of detections for a whole image.

Millions of features must fit in memory between the tiles and the outputs, so each detection is
kept as its pixel box, score and label in numpy arrays, its pixel geometry as WKB and its model
properties as ready-made JSON; shapely objects exist only per tile and per output chunk.
Pure; no I/O.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class DetectionTable:
    """Detections in full-image pixels, one row per detection.

    Attributes:
        boxes: ``(N, 4)`` pixel bounds ``[minx, miny, maxx, maxy]``.
        scores: Best class score per detection (1.0 without classes).
        labels: Best class IRI per detection ("" without classes).
        geometries_wkb: Pixel geometry of each detection as WKB.
        classes_json: ``featureClasses`` of each detection as a JSON array.
        properties_json: The model's other properties as JSON object members (no braces),
            "" when there are none.
    """

    boxes: FloatArray = field(default_factory=_empty_boxes)
    scores: FloatArray = field(default_factory=_empty_scores)
    labels: list[str] = field(default_factory=list)
    geometries_wkb: list[bytes] = field(default_factory=list)
    classes_json: list[str] = field(default_factory=list)
    properties_json: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

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
        )

    def take(self, rows: IntArray) -> DetectionTable:
        """A table of the given rows, in that order."""
        picked = rows.tolist()
        return DetectionTable(
            boxes=self.boxes[rows],
            scores=self.scores[rows],
            labels=[self.labels[i] for i in picked],
            geometries_wkb=[self.geometries_wkb[i] for i in picked],
            classes_json=[self.classes_json[i] for i in picked],
            properties_json=[self.properties_json[i] for i in picked],
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
    arrays: dict[str, npt.NDArray[Any]] = {"boxes": table.boxes, "scores": table.scores}
    columns: dict[str, list[bytes]] = {
        name: [s.encode() for s in getattr(table, name)] for name in _TEXT_COLUMNS
    }
    columns["geometries_wkb"] = table.geometries_wkb
    for name, items in columns.items():
        arrays[f"{name}.data"], arrays[f"{name}.lengths"] = _pack(items)
    return arrays


def table_from_arrays(arrays: Any) -> DetectionTable:
    """The table :func:`table_arrays` stored (``arrays`` maps names to arrays, as npz does).

    Raises:
        ValueError: If the arrays are inconsistent.
        KeyError: If an array is missing.
    """
    boxes = np.asarray(arrays["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(arrays["scores"], dtype=np.float64)
    columns = {
        name: _unpack(arrays[f"{name}.data"], arrays[f"{name}.lengths"])
        for name in (*_TEXT_COLUMNS, "geometries_wkb")
    }
    if any(len(c) != len(scores) for c in columns.values()) or len(boxes) != len(scores):
        raise ValueError("staged detection columns differ in length")
    return DetectionTable(
        boxes=boxes,
        scores=scores,
        labels=[b.decode() for b in columns["labels"]],
        geometries_wkb=columns["geometries_wkb"],
        classes_json=[b.decode() for b in columns["classes_json"]],
        properties_json=[b.decode() for b in columns["properties_json"]],
    )
