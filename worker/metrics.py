"""Metrics as CloudWatch Embedded Metric Format (EMF) lines on stdout, and JSON log lines.

EMF needs no CloudWatch client: each metric record is one JSON log event that CloudWatch Logs
turns into metrics (ECS awslogs, Fluent Bit on Kubernetes, or the CloudWatch agent). Tile
statistics of a region are gathered in a context variable, so the endpoint adapters count
retries and throttles without being handed a collector.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

NAMESPACE = "ModelRunner"
MAX_DIMENSION_CHARS = 255


@dataclass
class TileStats:
    """What the tiles of one region did."""

    latencies_s: list[float] = field(default_factory=list)
    failures: int = 0
    retries: int = 0
    throttles: int = 0
    s3_gets: int = 0  # GETs of the image's bytes fetched ahead (0: GDAL read them itself)
    s3_bytes_read: int = 0


_tile_stats: contextvars.ContextVar[TileStats | None] = contextvars.ContextVar(
    "tile_stats", default=None
)
_log_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "log_context", default=None
)


def tile_stats() -> TileStats | None:
    """The statistics being gathered for the current region, if any."""
    return _tile_stats.get()


@contextlib.contextmanager
def gathering_tile_stats() -> Iterator[TileStats]:
    """Gather tile statistics for the code (and the tasks it starts) inside the block."""
    stats = TileStats()
    token = _tile_stats.set(stats)
    try:
        yield stats
    finally:
        _tile_stats.reset(token)


def set_log_context(**values: str) -> None:
    """Add ``job_id`` / ``image_id`` / ``region_id`` to the current task's log lines."""
    merged = {**(_log_context.get() or {}), **values}
    _log_context.set(merged)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, with the task's job / image / region ids."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON."""
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **(_log_context.get() or {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def emf_record(
    dimensions: dict[str, str],
    values: dict[str, tuple[float, str]],
    properties: dict[str, Any] | None = None,
    now_s: float | None = None,
) -> dict[str, Any]:
    """One EMF event: ``values`` maps metric name -> (value, CloudWatch unit)."""
    dims = {k: v[:MAX_DIMENSION_CHARS] for k, v in dimensions.items()}
    return {
        "_aws": {
            "Timestamp": int(1000 * (time.time() if now_s is None else now_s)),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [sorted(dims)],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
                }
            ],
        },
        **dims,
        **{name: value for name, (value, _) in values.items()},
        **(properties or {}),
    }


def region_values(stats: TileStats, tiles: int, seconds: float) -> dict[str, tuple[float, str]]:
    """The metrics of a finished region."""
    values: dict[str, tuple[float, str]] = {
        "Tiles": (tiles, "Count"),
        "TileFailures": (stats.failures, "Count"),
        "EndpointRetries": (stats.retries, "Count"),
        "EndpointThrottles": (stats.throttles, "Count"),
        "RegionSeconds": (round(seconds, 3), "Seconds"),
        "TilesPerSecond": (round(tiles / seconds, 3) if seconds > 0 else 0.0, "Count/Second"),
    }
    if stats.s3_gets:
        values["S3Gets"] = (stats.s3_gets, "Count")
        values["S3BytesRead"] = (stats.s3_bytes_read, "Bytes")
    if stats.latencies_s:
        p50, p90, top = np.percentile(stats.latencies_s, [50, 90, 100]).tolist()
        values["TileLatencyP50"] = (round(1000 * p50, 1), "Milliseconds")
        values["TileLatencyP90"] = (round(1000 * p90, 1), "Milliseconds")
        values["TileLatencyMax"] = (round(1000 * top, 1), "Milliseconds")
    return values


def image_values(
    features: int, failed_tiles: int, seconds: float, finalise_s: float, failed: bool
) -> dict[str, tuple[float, str]]:
    """The metrics of an image that has ended."""
    return {
        "Features": (features, "Count"),
        "FailedTiles": (failed_tiles, "Count"),
        "ImageSeconds": (round(seconds, 3), "Seconds"),
        "FinaliseSeconds": (round(finalise_s, 3), "Seconds"),
        "ImagesFailed": (int(failed), "Count"),
    }


def queue_wait_values(seconds: float) -> dict[str, tuple[float, str]]:
    """How long a message waited in its queue before work on it started."""
    return {"QueueWaitSeconds": (round(max(0.0, seconds), 3), "Seconds")}


def capacity_wait_values() -> dict[str, tuple[float, str]]:
    """A job that went back to its queue to wait for endpoint capacity."""
    return {"CapacityWaits": (1, "Count")}


class MetricsWriter:
    """Writes EMF events, one JSON line each, to a stream (stdout by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        """Write to ``stream``."""
        self._stream = stream

    def write(
        self,
        dimensions: dict[str, str],
        values: dict[str, tuple[float, str]],
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Emit one event."""
        stream = self._stream or sys.stdout
        stream.write(json.dumps(emf_record(dimensions, values, properties)) + "\n")
        stream.flush()
