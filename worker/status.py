"""Status messages: the SNS body and String attributes of the ModelRunner API."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict

# A description quotes the reason for a failure, which may quote the input: bounded, so status
# messages and the log lines that echo them stay small whatever a request holds.
MAX_DESCRIPTION_CHARS = 4000


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
    failed_tiles: int | None = None
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
            attributes["processing_duration"] = f"{self.processing_duration_s:.3f}"
        if self.failed_tiles is not None:
            attributes["failed_tiles"] = str(self.failed_tiles)
        if self.tiles_done is not None:
            attributes["tiles_done"] = str(self.tiles_done)
        if self.tile_count is not None:
            attributes["tile_count"] = str(self.tile_count)
        return attributes


class StatusPublisher(Protocol):
    """Publishes status events (SNS in production)."""

    async def publish(self, event: StatusEvent) -> None:
        """Publish one event."""
