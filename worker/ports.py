"""The service's ports: the narrow protocols its core works through, and the values they carry.

The adapters (:mod:`worker.adapters`) implement them against AWS and HTTP; the tests' in-memory
fakes (``tests/fakes.py``) implement them in memory. Nothing here does I/O.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tiling.gdalenv import ReadCredentials
from worker.contract.messages import ImageRequest
from worker.contract.records import ImageOutcome, ImageRecord, RunPlan
from worker.contract.status import StatusEvent
from worker.poison import FleetEntry, Hold
from worker.staging import StagedRegion


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """A received message and what is needed to settle it.

    ``submission_id`` names the request the message carries: its own id, or the id of the
    message it was sent again for (the ``modelrunner_submission_id`` attribute).
    """

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at_s: float | None = None  # when the message was sent (epoch seconds)
    submission_id: str = ""

    def __post_init__(self) -> None:
        if not self.submission_id:
            object.__setattr__(self, "submission_id", self.message_id)


class MessageQueue(Protocol):
    """The operations the loop needs from a work queue."""

    async def receive(
        self, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[QueueMessage]:
        """Long-poll for up to ``max_messages`` messages, hidden for ``visibility_s``."""
        ...

    async def delete(self, message: QueueMessage) -> None:
        """Acknowledge a message."""
        ...

    async def set_visibility(self, message: QueueMessage, timeout_s: int) -> None:
        """Hide a message for ``timeout_s`` more seconds (0 releases it now)."""
        ...

    async def send(self, body: str, delay_s: int = 0, submission_id: str = "") -> None:
        """Send one message, visible after ``delay_s`` seconds, as part of ``submission_id``
        (if given)."""
        ...

    async def dead_letter(self, message: QueueMessage, reason: str) -> None:
        """Move a message to the dead-letter queue with the reason, then delete it."""
        ...


class DeadLetters(Protocol):
    """Puts message bodies in a dead-letter queue."""

    async def dead_letter_body(self, body: str, reason: str, source_id: str = "") -> None:
        """Put ``body`` in the DLQ with the reason as an attribute."""
        ...


class MessageSender(Protocol):
    """Sends new messages to a queue."""

    async def send(self, body: str, delay_s: int = 0, submission_id: str = "") -> None:
        """Send one message, visible after ``delay_s`` seconds, as part of ``submission_id``
        (if given)."""
        ...


class JobStore(Protocol):
    """Records images, their regions and their outcome."""

    async def open_image(self, job_id: str, image_url: str, plan: RunPlan) -> ImageRecord:
        """Create the image's record, or return the one a previous delivery made.

        An image that has ended, asked for by a new submission (``plan.submission_id`` set and
        not the one that started the recorded run), starts its next run: a fresh record
        (``created`` True). Otherwise the record there is returned as it is.
        """
        ...

    async def get(self, job_id: str, image_url: str) -> ImageRecord | None:
        """The image's record, None if there is none."""
        ...

    async def region_done(
        self, job_id: str, image_url: str, region_id: int, run: int
    ) -> ImageRecord | None:
        """Add ``region_id`` of ``run`` to the finished regions; return the record after the
        change, or None if the image is no longer on ``run`` (or has no record)."""
        ...

    async def claim(self, job_id: str, image_url: str, owner: str, lease_s: float) -> bool:
        """Take (or renew) the right to finalise; False if another worker holds it."""
        ...

    async def finish(self, job_id: str, image_url: str, owner: str, outcome: ImageOutcome) -> bool:
        """Record the terminal outcome once; False if it was already recorded or not ours."""
        ...

    async def mark_published(self, job_id: str, image_url: str, run: int) -> None:
        """Record that the terminal status of ``run`` was published (nothing if the image is
        on another run now)."""
        ...

    async def mark_cleaned(self, job_id: str, image_url: str, run: int) -> None:
        """Record that ``run`` is over: published and its staged regions deleted."""
        ...

    async def advance_output(
        self, job_id: str, image_url: str, owner: str, output: str, count: int
    ) -> bool:
        """Record that ``output`` acknowledged its first ``count`` features; False if
        ``owner`` no longer holds the lease (or the outcome is recorded already)."""
        ...

    async def stalled(self, now: float) -> list[tuple[str, str]]:
        """(job id, image URL) of the images not yet published and cleaned up whose
        finalisation lease expired before ``now``."""
        ...


class HoldStore(Protocol):
    """Who is working on which message, and which workers are alive (:mod:`worker.poison`)."""

    async def begin(self, key: str, worker: str, now: float) -> tuple[list[Hold], int]:
        """Add ``worker``'s hold to the history of message ``key``; the holds before it and
        the index of the new one."""
        ...

    async def end(self, key: str, index: int, now: float, error: bool) -> None:
        """End hold ``index`` of message ``key`` (``error``: the attempt failed)."""
        ...

    async def fleet(self) -> dict[str, FleetEntry]:
        """The fleet registry: every worker that beat in the last while."""
        ...

    async def beat(self, worker: str, entry: FleetEntry) -> None:
        """Write ``worker``'s entry in the fleet registry."""
        ...

    async def forget(self, workers: list[str]) -> None:
        """Remove long-gone workers from the registry."""
        ...


class Staging(Protocol):
    """Where finished regions wait for their image's finalisation."""

    async def put(
        self, job_id: str, image_index: int, region_id: int, staged: StagedRegion, run: int = 1
    ) -> None:
        """Store (or overwrite) a region's result."""
        ...

    async def get(
        self, job_id: str, image_index: int, region_id: int, run: int = 1
    ) -> StagedRegion:
        """Read a region's result."""
        ...

    async def exists(self, job_id: str, image_index: int, region_id: int, run: int = 1) -> bool:
        """Whether a region's result is stored."""
        ...

    async def delete(
        self, job_id: str, image_index: int, region_ids: list[int], run: int = 1
    ) -> None:
        """Remove the staged results of an image."""
        ...


class StatusPublisher(Protocol):
    """Publishes status events (SNS in production)."""

    async def publish(self, event: StatusEvent) -> None:
        """Publish one event."""


class OutputProgress(Protocol):
    """How far each output of an image got in earlier attempts, and where that is recorded."""

    def acknowledged(self, output: str) -> int:
        """How many features, in output order, ``output`` has acknowledged so far."""
        ...

    async def advance(self, output: str, count: int) -> None:
        """Record that ``output`` has acknowledged its first ``count`` features.

        Raises:
            FinalisingElsewhere: If this worker no longer holds the image's lease.
        """
        ...


class SinkWriter(Protocol):
    """One image's output in progress."""

    async def write(self, features: list[str]) -> None:
        """Add Feature texts."""
        ...

    async def close(self) -> str:
        """Finish the output; return where it went."""
        ...

    async def abort(self) -> None:
        """Give up the output, leaving nothing half-written where possible."""
        ...


class Sink(Protocol):
    """Somewhere the features of images are written."""

    async def open(
        self, job_id: str, output_name: str, progress: OutputProgress | None = None
    ) -> SinkWriter:
        """Start the output of one image; an output that cannot be rewritten as a whole
        (a stream) resumes after what ``progress`` says it acknowledged."""
        ...


class ModelEndpoint(Protocol):
    """Runs a model on one encoded tile and returns the reply body."""

    async def invoke(self, payload: bytes, content_type: str) -> bytes:
        """Send one tile.

        Raises:
            EndpointRetryableError: Still throttled or unavailable after the retries.
            EndpointPermanentError: The model rejected the tile.
        """
        ...


class EndpointFactory(Protocol):
    """Builds the endpoint a request targets."""

    async def for_request(self, request: ImageRequest) -> ModelEndpoint:
        """Return the request's model endpoint."""
        ...


class SinkFactory(Protocol):
    """Builds the outputs a request asks for."""

    async def for_request(self, request: ImageRequest) -> list[Sink]:
        """Return the request's outputs."""
        ...


Bytes = npt.NDArray[np.uint8]


class ObjectRanges(Protocol):
    """Ranged reads of one stored object (an ``s3://`` image), counted."""

    gets: int
    bytes_read: int

    async def size(self) -> int:
        """The object's length.

        Raises:
            OSError: If the object cannot be found or read.
        """
        ...

    async def fetch(self, start: int, end: int) -> Bytes:
        """Bytes ``start`` to ``end`` (exclusive; clipped to the object).

        Raises:
            OSError: If they cannot be had.
        """
        ...


class ObjectSource(Protocol):
    """Opens stored objects for ranged reads, under an image's read credentials or none."""

    def open(
        self, url: str, credentials: ReadCredentials | None
    ) -> AbstractAsyncContextManager[ObjectRanges]:
        """Ranged reads of the object at ``url``."""
        ...
