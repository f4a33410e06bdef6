"""Status messages: the SNS body and String attributes of the ModelRunner API.

Attributes (all SNS ``String``; empty ones are left out):

* ``status``, ``image_status``: the status value; ``job_id``; ``image_id``
  (``<jobId>:<imageUrl>``); ``region_id`` for region and progress statuses.
* ``processing_duration``: integer milliseconds since the image started, e.g. ``"12345"``.
* ``failed_tiles``: the failed tiles as JSON, ``[[[row, col], [width, height]], ...]`` (pixel
  offsets in the full image and the tile size), at most ``MAX_LISTED_FAILED_TILES`` of them and
  at most ``MAX_FAILED_TILES_CHARS`` characters; ``failed_tile_count``: how many failed in all,
  listed or not (integer). Both are set together.
* ``tiles_done`` and ``tile_count`` on progress statuses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from tiling.grid import Window

# A description quotes the reason for a failure, which may quote the input: bounded, so status
# messages and the log lines that echo them stay small whatever a request holds.
MAX_DESCRIPTION_CHARS = 4000
# The failed tile list is bounded well under SNS's 256 KiB message limit: the rest is counted.
MAX_LISTED_FAILED_TILES = 100
MAX_FAILED_TILES_CHARS = 4096
MS_PER_S = 1000


def failed_tiles_json(windows: Sequence[Window], limit: int = MAX_LISTED_FAILED_TILES) -> str:
    """The first ``limit`` windows as ``[[[row, col], [width, height]], ...]``, compact JSON,
    shortened further if needed to stay within ``MAX_FAILED_TILES_CHARS``."""
    items = [[[w.row_off, w.col_off], [w.width, w.height]] for w in windows[:limit]]
    text = json.dumps(items, separators=(",", ":"))
    while len(text) > MAX_FAILED_TILES_CHARS:
        items = items[: len(items) // 2]
        text = json.dumps(items, separators=(",", ":"))
    return text


class Status(StrEnum):
    """Job, image and region status values."""

    STARTED = "STARTED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        """True for the statuses that end an image."""
        return self in {Status.SUCCESS, Status.PARTIAL, Status.FAILED}


class StatusEvent(BaseModel):
    """One status update of an image (or of a request that could not be parsed)."""

    model_config = ConfigDict(frozen=True)

    status: Status
    job_id: str
    description: str
    image_url: str | None = None
    region_id: str | None = None
    processing_duration_s: float | None = None
    failed_tile_count: int | None = None
    failed_tiles: tuple[Window, ...] = ()
    tiles_done: int | None = None
    tile_count: int | None = None

    @property
    def image_id(self) -> str | None:
        """``<jobId>:<imageUrl>``, the API's image identifier."""
        return f"{self.job_id}:{self.image_url}" if self.image_url else None

    def sns_message(self) -> str:
        """The SNS body: ``StatusMonitor update: <STATUS> <jobId>: <description>``."""
        text = self.description
        if len(text) > MAX_DESCRIPTION_CHARS:
            cut = len(text) - MAX_DESCRIPTION_CHARS
            text = f"{text[:MAX_DESCRIPTION_CHARS]}... ({cut} more characters)"
        return f"StatusMonitor update: {self.status} {self.job_id[:256]}: {text}"

    def sns_attributes(self) -> dict[str, str]:
        """The filterable String attributes (empty values are left out: SNS rejects them)."""
        attributes = {
            "status": self.status.value,
            "job_id": self.job_id,
            "image_status": self.status.value,
        }
        if self.image_id:
            attributes["image_id"] = self.image_id
        if self.region_id:
            attributes["region_id"] = self.region_id
        if self.processing_duration_s is not None:
            attributes["processing_duration"] = str(round(self.processing_duration_s * MS_PER_S))
        if self.failed_tile_count is not None:
            attributes["failed_tiles"] = failed_tiles_json(self.failed_tiles)
            attributes["failed_tile_count"] = str(self.failed_tile_count)
        if self.tiles_done is not None:
            attributes["tiles_done"] = str(self.tiles_done)
        if self.tile_count is not None:
            attributes["tile_count"] = str(self.tile_count)
        return attributes
