"""Image records as values, and their DynamoDB item form. Pure: no I/O.

Item fields (DynamoDB attribute types in brackets):

* ``image_id`` [S] (hash key, ``<jobId>:<imageUrl>``), ``job_id``, ``image_url``, ``job_name``
  [S]; ``status`` [S] (IN_PROGRESS, then the terminal status); ``expire_time`` [N] (TTL).
* ``run`` [N]: 1 for the first run of the image, one more each time a new submission of the
  ended job runs it again. ``submission_id`` [S]: the SQS message id of the request that
  started the run (the original id for a message the worker sent again itself).
* ``region_count``, ``tile_count`` [N]; ``start_time``, ``deadline``, ``end_time`` [N, epoch
  seconds]; ``regions_done`` [NS].
* ``lease_owner`` [S], ``lease_until`` [N]: the finaliser's claim.
* ``request`` [S], ``image_index`` [N]: the request body and which of its images this is, so a
  worker with no message of the image (the sweep) can finish it.
* ``unfinished`` [S]: ``"1"`` from the start of a run until its terminal status is published
  and its staged regions are deleted; with ``lease_until`` it keys the sparse
  ``unfinished-index`` the sweep reads (only claimed, unfinished images are in it).
* ``progress_<output>`` [N] (``progress_kinesis:<stream>``): the count of features, in output
  order, that the stream has acknowledged; a resumed finaliser skips them. One attribute per
  output, so records of any age take it without a map to create first.
* ``final_status`` [S], ``published`` [BOOL], ``reason`` [S], ``feature_count`` [N],
  ``outputs`` [L of S].
* ``processing_duration`` [N, seconds, 3 decimals] and ``processing_duration_ms`` [N, integer].
* ``failed_tiles`` [N]: the count of failed tiles. ``failed_tile_list`` [L of S]:
  ``"row,col WIDTHxHEIGHT: reason"`` for up to ``MAX_RECORDED_FAILED_TILES`` of them.
  ``failed_tile_details`` [L of M]: the same tiles as ``{row, col, width, height [N],
  reason [S]}``, the machine-readable form.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tiling.grid import Window
from worker.contract.status import Status

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

MAX_RECORDED_FAILED_TILES = 100
PROGRESS_PREFIX = "progress_"
MS_PER_S = 1000


@dataclass(frozen=True, slots=True)
class FailedTile:
    """A tile that failed after its retries, and why."""

    window: Window
    reason: str

    def describe(self) -> str:
        """``row,col widthxheight: reason`` (pixel offsets in the full image)."""
        w = self.window
        return f"{w.row_off},{w.col_off} {w.width}x{w.height}: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        """The tile as a JSON object."""
        w = self.window
        return {
            "row": w.row_off,
            "col": w.col_off,
            "width": w.width,
            "height": w.height,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What a run of an image starts with.

    With an ``endpoint`` and a ``load``, the image counts as active on that endpoint (for
    capacity-based throttling) until its outcome is recorded. ``submission_id`` names the
    request that asks for the run ("" when unknown: such a call never starts a new run of an
    ended image).
    """

    job_name: str | None
    region_count: int
    tile_count: int
    deadline_s: float
    submission_id: str = ""
    endpoint: str | None = None
    load: int = 0
    request_body: str = ""
    image_index: int = 0


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    """How an image ended: what its record and terminal status report.

    ``failed_tiles`` counts every tile without results; ``failed_tile_list`` holds those whose
    window is known (a FAILED image that never ran a tile counts them all and lists none).
    """

    status: Status
    tile_count: int = 0
    failed_tiles: int = 0
    feature_count: int = 0
    duration_s: float = 0.0
    reason: str = ""
    outputs: tuple[str, ...] = ()
    failed_tile_list: tuple[FailedTile, ...] = ()


# What an outcome and a record hold under the same names.
_OUTCOME_FIELDS = (
    "tile_count",
    "failed_tiles",
    "feature_count",
    "duration_s",
    "reason",
    "outputs",
    "failed_tile_list",
)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """The state of one image of a job, as stored.

    ``created`` is True when the call that returned the record started its run (a new image,
    or an ended one run again for a new submission).
    """

    region_count: int
    tile_count: int
    start_time: float
    deadline: float
    regions_done: frozenset[int] = frozenset()
    final_status: Status | None = None
    published: bool = False
    reason: str = ""
    failed_tiles: int = 0
    feature_count: int = 0
    duration_s: float = 0.0
    outputs: tuple[str, ...] = ()
    failed_tile_list: tuple[FailedTile, ...] = ()
    run: int = 1
    submission_id: str = ""
    created: bool = False
    request_body: str = ""
    image_index: int = 0
    output_progress: Mapping[str, int] = field(default_factory=dict)

    def outcome(self) -> ImageOutcome | None:
        """The recorded terminal outcome, None before there is one."""
        if self.final_status is None:
            return None
        values = {name: getattr(self, name) for name in _OUTCOME_FIELDS}
        return ImageOutcome(status=self.final_status, **values)

    def with_outcome(self, outcome: ImageOutcome) -> ImageRecord:
        """The record once ``outcome`` is recorded."""
        values = {name: getattr(outcome, name) for name in _OUTCOME_FIELDS}
        return dataclasses.replace(self, final_status=outcome.status, **values)

    @property
    def complete(self) -> bool:
        """Every region has been recorded."""
        return len(self.regions_done) >= self.region_count

    def past_deadline(self, now: float | None = None) -> bool:
        """The job deadline has passed."""
        return (time.time() if now is None else now) > self.deadline

    def redelivered(self, submission_id: str) -> bool:
        """The run was started by ``submission_id`` (a redelivery of its message)."""
        return bool(submission_id) and self.submission_id == submission_id


def s_value(value: str) -> AttributeValueTypeDef:
    """A DynamoDB string."""
    return {"S": value}


def n_value(value: float) -> AttributeValueTypeDef:
    """A DynamoDB number."""
    return {"N": str(value)}


def failed_tile_items(tiles: tuple[FailedTile, ...]) -> dict[str, AttributeValueTypeDef]:
    """``failed_tile_list`` and ``failed_tile_details`` of the first recorded tiles."""
    kept = tiles[:MAX_RECORDED_FAILED_TILES]
    details: list[AttributeValueTypeDef] = [
        {
            "M": {
                "row": n_value(t.window.row_off),
                "col": n_value(t.window.col_off),
                "width": n_value(t.window.width),
                "height": n_value(t.window.height),
                "reason": s_value(t.reason),
            }
        }
        for t in kept
    ]
    return {
        "failed_tile_list": {"L": [s_value(t.describe()) for t in kept]},
        "failed_tile_details": {"L": details},
    }


def duration_items(duration_s: float) -> dict[str, AttributeValueTypeDef]:
    """``processing_duration`` (seconds) and ``processing_duration_ms``."""
    return {
        "processing_duration": n_value(round(duration_s, 3)),
        "processing_duration_ms": n_value(round(duration_s * MS_PER_S)),
    }


def _strings(value: Any) -> tuple[str, ...]:
    items = value.get("L", []) if isinstance(value, dict) else []
    return tuple(v["S"] for v in items if "S" in v)


def _failed_tiles(value: Any) -> tuple[FailedTile, ...]:
    items = value.get("L", []) if isinstance(value, dict) else []
    tiles = []
    for item in items:
        tile = item.get("M", {})
        window = Window(
            int(tile["col"]["N"]),
            int(tile["row"]["N"]),
            int(tile["width"]["N"]),
            int(tile["height"]["N"]),
        )
        tiles.append(FailedTile(window, tile.get("reason", {}).get("S", "")))
    return tuple(tiles)


def record_of(item: dict[str, Any], created: bool = False) -> ImageRecord:
    """The record a DynamoDB item holds (items written before a field existed read as its
    default)."""
    final = item.get("final_status", {}).get("S")
    return ImageRecord(
        region_count=int(item["region_count"]["N"]),
        tile_count=int(item.get("tile_count", {}).get("N", "0")),
        start_time=float(item["start_time"]["N"]),
        deadline=float(item["deadline"]["N"]),
        regions_done=frozenset(int(v) for v in item.get("regions_done", {}).get("NS", [])),
        final_status=Status(final) if final else None,
        published=bool(item.get("published", {}).get("BOOL", False)),
        reason=item.get("reason", {}).get("S", ""),
        failed_tiles=int(item.get("failed_tiles", {}).get("N", "0")),
        feature_count=int(item.get("feature_count", {}).get("N", "0")),
        duration_s=float(item.get("processing_duration", {}).get("N", "0")),
        outputs=_strings(item.get("outputs")),
        failed_tile_list=_failed_tiles(item.get("failed_tile_details")),
        run=int(item.get("run", {}).get("N", "1")),
        submission_id=item.get("submission_id", {}).get("S", ""),
        created=created,
        request_body=item.get("request", {}).get("S", ""),
        image_index=int(item.get("image_index", {}).get("N", "0")),
        output_progress={
            key.removeprefix(PROGRESS_PREFIX): int(value["N"])
            for key, value in item.items()
            if key.startswith(PROGRESS_PREFIX)
        },
    )


@dataclass(frozen=True, slots=True)
class JobRecordView:
    """A read-only view of one image's job record, for clients (the ``modelrunner`` command).

    ``status`` is the terminal status once there is one, else ``IN_PROGRESS``.
    """

    job_id: str
    image_url: str
    job_name: str
    status: Status
    record: ImageRecord
    end_time: float | None = None

    @property
    def ended(self) -> bool:
        """The image has a terminal status."""
        return self.status.terminal

    def as_json(self) -> dict[str, Any]:
        """The view as plain JSON values."""
        record = self.record
        return {
            "job_id": self.job_id,
            "image_url": self.image_url,
            "job_name": self.job_name,
            "status": self.status.value,
            "run": record.run,
            "submission_id": record.submission_id,
            "region_count": record.region_count,
            "regions_done": len(record.regions_done),
            "tile_count": record.tile_count,
            "failed_tiles": record.failed_tiles,
            "failed_tile_list": [t.as_json() for t in record.failed_tile_list],
            "feature_count": record.feature_count,
            "processing_duration_s": record.duration_s,
            "reason": record.reason,
            "outputs": list(record.outputs),
            "start_time": record.start_time,
            "end_time": self.end_time,
        }


def view_of(item: dict[str, Any]) -> JobRecordView:
    """The view of a DynamoDB item of the job table (as any AWS SDK returns it)."""
    record = record_of(item)
    end = item.get("end_time", {}).get("N")
    return JobRecordView(
        job_id=item.get("job_id", {}).get("S", ""),
        image_url=item.get("image_url", {}).get("S", ""),
        job_name=item.get("job_name", {}).get("S", ""),
        status=record.final_status or Status.IN_PROGRESS,
        record=record,
        end_time=float(end) if end is not None else None,
    )
