"""Synthetic test models: centerpoint, flood and failure. Pure functions of the tile.

Each model takes the decoded tile (bands, rows, cols) and the request's custom attributes and
returns an HTTP status and a body.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_CLASS = "sample_object"
DEFAULT_FLOOD_VOLUME = 100
MAX_FLOOD_VOLUME = 100_000
MAX_SLEEP_MS = 60_000

Reply = tuple[int, bytes]
Model = Callable[[npt.NDArray[Any], Mapping[str, str]], Reply]
THROTTLED = 429


def box_feature(
    minx: float, miny: float, maxx: float, maxy: float, score: float, model: str
) -> dict[str, Any]:
    """A model-contract feature for a pixel box (tile coordinates)."""
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    return {
        "type": "Feature",
        "geometry": None,
        "properties": {
            "imageGeometry": {"type": "Polygon", "coordinates": [ring]},
            "imageBBox": [minx, miny, maxx, maxy],
            "featureClasses": [{"iri": SAMPLE_CLASS, "score": score}],
            "modelMetadata": {"modelName": model},
        },
    }


def _collection(features: list[dict[str, Any]]) -> Reply:
    return 200, json.dumps({"type": "FeatureCollection", "features": features}).encode()


def _sleep(attributes: Mapping[str, str]) -> Reply | None:
    """Take ``sleep_ms`` (a stand-in for inference time); a reply if it is not a number."""
    try:
        sleep_ms = float(attributes.get("sleep_ms", "0"))
    except ValueError:
        return 400, b'{"message": "sleep_ms must be a number"}'
    if sleep_ms > 0:
        time.sleep(min(sleep_ms, MAX_SLEEP_MS) / 1000)
    return None


def centerpoint(tile: npt.NDArray[Any], attributes: Mapping[str, str]) -> Reply:
    """One feature per tile: a box at the tile centre, +-10% of the tile size, score 1.0.

    ``sleep_ms`` in the attributes makes it take that long (a stand-in for inference time).
    """
    if (refused := _sleep(attributes)) is not None:
        return refused
    rows, cols = tile.shape[1], tile.shape[2]
    cx, cy, dx, dy = cols / 2, rows / 2, cols * 0.1, rows * 0.1
    return _collection([box_feature(cx - dx, cy - dy, cx + dx, cy + dy, 1.0, "centerpoint")])


def flood(tile: npt.NDArray[Any], attributes: Mapping[str, str]) -> Reply:
    """``flood_volume`` random boxes (default 100) inside the tile, random scores.

    With ``flood_seed=tile`` the boxes are a function of the tile's pixels (the same tile gets
    the same answer every time), for comparing runs. ``sleep_ms`` as for :func:`centerpoint`.
    """
    if (refused := _sleep(attributes)) is not None:
        return refused
    try:
        volume = int(attributes.get("flood_volume", DEFAULT_FLOOD_VOLUME))
    except ValueError:
        return 400, b'{"message": "flood_volume must be an integer"}'
    if not 0 <= volume <= MAX_FLOOD_VOLUME:
        return 400, f'{{"message": "flood_volume must be in 0..{MAX_FLOOD_VOLUME}"}}'.encode()
    rows, cols = tile.shape[1], tile.shape[2]
    if attributes.get("flood_seed") == "tile":
        rng = random.Random(hashlib.sha256(tile.tobytes()).digest())
    else:
        rng = random.Random()
    features = []
    for _ in range(volume):
        w, h = rng.uniform(4, max(5, cols / 10)), rng.uniform(4, max(5, rows / 10))
        x, y = rng.uniform(0, max(0, cols - w)), rng.uniform(0, max(0, rows - h))
        features.append(box_feature(x, y, x + w, y + h, round(rng.uniform(0.3, 1.0), 4), "flood"))
    return _collection(features)


# Mean pixel value bands of the failure model (README, "Test models").
FAILURE_BANDS: tuple[tuple[float, Reply], ...] = (
    (32, (500, b'{"message": "synthetic internal error"}')),
    (64, (400, b'{"message": "synthetic bad request"}')),
    (96, (200, b"this is not json")),
    (128, (200, b'{"type": "Feature", "properties": {}}')),
)


def failure(tile: npt.NDArray[Any], attributes: Mapping[str, str]) -> Reply:
    """Fail by the tile's mean value: <32 HTTP 500, <64 HTTP 400, <96 not JSON, <128 not a
    FeatureCollection; brighter tiles get the centerpoint answer."""
    mean = float(np.mean(tile)) if tile.size else 0.0
    for upper, reply in FAILURE_BANDS:
        if mean < upper:
            return reply
    return centerpoint(tile, attributes)


class Throttle:
    """Answers 429 to the first ``throttle_count`` (default 2) requests for each distinct tile,
    then the centerpoint reply; the server adds ``Retry-After: <retry_after>`` (default 1)."""

    def __init__(self) -> None:
        """Start with no tile seen."""
        self._seen: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def __call__(self, tile: npt.NDArray[Any], attributes: Mapping[str, str]) -> Reply:
        """Throttle or answer."""
        try:
            limit = int(attributes.get("throttle_count", "2"))
        except ValueError:
            return 400, b'{"message": "throttle_count must be an integer"}'
        key = hashlib.sha256(tile.tobytes()).digest()
        with self._lock:
            seen = self._seen.get(key, 0)
            self._seen[key] = seen + 1
        if seen < limit:
            return THROTTLED, b'{"message": "synthetic throttling"}'
        return centerpoint(tile, attributes)


def retry_after_header(attributes: Mapping[str, str]) -> str:
    """The Retry-After value the server sends with a 429 from the throttle model."""
    return attributes.get("retry_after", "1")


MODELS: dict[str, Model] = {
    "centerpoint": centerpoint,
    "flood": flood,
    "failure": failure,
    "throttle": Throttle(),
}
