"""Settling a message by the kind of error that ended its work: the routing every handler
shares (see :mod:`worker.handlers`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from worker.contract.parsing import RequestLimits, job_id_of
from worker.contract.status import Status, StatusEvent
from worker.errors import FinalisingElsewhere, PermanentError, RetryableError
from worker.holding import Attempt
from worker.ports import MessageQueue, QueueMessage, StatusPublisher

log = logging.getLogger(__name__)

UNKNOWN_JOB_ID = "unknown"
MAX_RETRY_DELAY_S = 900
MAX_DELAY_S = 900  # SQS DelaySeconds limit


@dataclass(frozen=True, slots=True)
class Work:
    """A received message, the queue it came from and this worker's attempt at it (None when
    the attempt could not be recorded)."""

    queue: MessageQueue
    message: QueueMessage
    is_region: bool
    attempt: Attempt | None = None

    @property
    def key(self) -> str:
        """The message's key in the hold records."""
        return f"{'region' if self.is_region else 'image'}#{self.message.message_id}"


@dataclass(frozen=True, slots=True)
class HandlingSettings:
    """What the handlers are told (``MODELRUNNER_*`` settings)."""

    request_limits: RequestLimits
    image_schemes: frozenset[str]
    endpoint_hosts: frozenset[str]
    max_receives: int
    max_attempts: int
    retry_delay_s: int
    capacity_retry_s: int


class Settler:
    """Settles messages: the routing shared by every kind of message."""

    def __init__(self, settings: HandlingSettings, status: StatusPublisher) -> None:
        """Publish rejections through ``status``."""
        self.settings = settings
        self._status = status

    async def reject(self, work: Work, reason: str) -> None:
        """An unparseable message: FAILED status, dead-letter queue."""
        job_id = job_id_of(work.message.body) or UNKNOWN_JOB_ID
        await self._status.publish(
            StatusEvent(status=Status.FAILED, job_id=job_id, description=reason)
        )
        await work.queue.dead_letter(work.message, reason)

    def abandoned(self, work: Work) -> str | None:
        """The reason to give up a message whose workers kept dying while working on it, or
        whose attempts kept failing with a bug, more often than chance explains
        (:mod:`worker.poison`); None if it is not one. Without a recorded attempt, by its
        receive count alone."""
        if work.attempt is not None:
            return work.attempt.verdict.reason
        message = work.message
        limit = self.settings.max_receives
        if message.receive_count <= limit:
            return None
        return (
            f"message received {message.receive_count} times without finishing (the workers"
            f" handling it stopped; limit MODELRUNNER_MAX_RECEIVES={limit})"
        )

    async def route(
        self,
        work: Work,
        job_id: str,
        attempt: Callable[[], Awaitable[None]],
        give_up: Callable[[str], Awaitable[None]],
    ) -> bool:
        """Run ``attempt``; on an error settle the message by the error's kind (``give_up``
        with the reason where the work cannot go on). True if the attempt succeeded.

        Any other error is a bug: it reaches the worker loop, which logs it and leaves the
        message to come back after its visibility timeout (given up after
        ``MODELRUNNER_MAX_RECEIVES`` receipts), so nothing is lost."""
        try:
            await attempt()
        except FinalisingElsewhere as err:
            await self.look_again(work, err)
        except PermanentError as err:
            await give_up(str(err))
        except RetryableError as err:
            await self._retry_or_give_up(work, job_id, str(err), give_up)
        else:
            return True
        return False

    async def _retry_or_give_up(
        self, work: Work, job_id: str, reason: str, give_up: Callable[[str], Awaitable[None]]
    ) -> None:
        received = work.message.receive_count
        if work.attempt is not None:  # attempts that failed with an error, deaths apart
            work.attempt.failed = True
            received = work.attempt.verdict.errors + 1
        if received >= self.settings.max_attempts:
            await give_up(f"gave up after {received} attempts: {reason}")
            return
        delay_s = min(MAX_RETRY_DELAY_S, self.settings.retry_delay_s * 2 ** (received - 1))
        log.warning("job %s: %s; retrying in %ds", job_id, reason, delay_s)
        await work.queue.set_visibility(work.message, delay_s)
        await self.tell(
            job_id,
            f"{reason}; trying again in {delay_s}s"
            f" (attempt {received} of {self.settings.max_attempts})",
        )

    async def tell(self, job_id: str, description: str) -> None:
        """An IN_PROGRESS status saying what the worker is doing besides tiles (best effort):
        a retry after an error, a region run again."""
        event = StatusEvent(status=Status.IN_PROGRESS, job_id=job_id, description=description)
        try:
            await self._status.publish(event)
        except RetryableError as err:
            log.warning("job %s: status not sent: %s", job_id, err)

    async def look_again(self, work: Work, err: FinalisingElsewhere) -> None:
        """Send the message again for when the finalisation lease will have expired."""
        delay_s = math.ceil(err.retry_after_s) + 1
        log.info("%s; looking again in %ds", err, delay_s)
        await self.send_again(work, delay_s)

    @staticmethod
    async def send_again(work: Work, delay_s: int) -> None:
        """A fresh copy of the message, visible after ``delay_s``; the received one deleted.

        Waiting (for capacity, for a live finaliser) this way does not count toward the
        receives that dead-letter a message, as a longer visibility would. The copy carries the
        submission id: it is the same request, not a new submission of it.
        """
        await work.queue.send(
            work.message.body, min(MAX_DELAY_S, delay_s), work.message.submission_id
        )
        await work.queue.delete(work.message)
