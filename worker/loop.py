"""The worker loop: poll the image queue, process each request, settle its message.

Routing: a request that cannot be parsed, or whose images fail permanently, gets a FAILED status
and goes to the dead-letter queue; a retryable failure releases the message for another try
until ``max_attempts``, then it is failed and dead-lettered the same way. Nothing is deleted
without a terminal status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import InvalidRequestError, RetryableError
from worker.messages import ImageRequest, job_id_of, parse_image_request
from worker.pipeline import ImagePipeline
from worker.policy import check_endpoint, check_image_urls
from worker.queue import MessageQueue, QueueMessage
from worker.settings import Settings
from worker.status import Status, StatusEvent, StatusPublisher

log = logging.getLogger(__name__)

UNKNOWN_JOB_ID = "unknown"
RECEIVE_BACKOFF_CAP_S = 30.0
MAX_RETRY_DELAY_S = 900


class Worker:
    """Long-running consumer of the image queue."""

    def __init__(
        self,
        settings: Settings,
        image_queue: MessageQueue,
        pipeline: ImagePipeline,
        status: StatusPublisher,
        stop: asyncio.Event,
    ) -> None:
        """Consume ``image_queue`` until ``stop`` is set."""
        self._settings = settings
        self._queue = image_queue
        self._pipeline = pipeline
        self._status = status
        self._stop = stop

    async def run(self) -> None:
        """Poll until stopped; one failure never stops the loop."""
        errors = 0
        log.info("worker polling %s", getattr(self._queue, "queue_url", "the image queue"))
        while not self._stop.is_set():
            try:
                messages = await self._queue.receive(1, self._settings.poll_wait_s)
                for message in messages:
                    await self.handle(message)
                errors = 0
            except Exception:  # the loop is the one place that catches everything
                errors += 1
                delay = random.uniform(0, min(RECEIVE_BACKOFF_CAP_S, 0.5 * 2**errors))
                log.exception("worker loop error; backing off %.1fs", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        log.info("worker stopped")

    async def handle(self, message: QueueMessage) -> None:
        """Process one message and settle it (delete, release or dead-letter)."""
        heartbeat = asyncio.create_task(self._heartbeat(message))
        try:
            await self._handle(message)
        finally:
            heartbeat.cancel()

    async def _handle(self, message: QueueMessage) -> None:
        try:
            request = parse_image_request(message.body, self._settings.request_limits)
            check_image_urls(request, self._settings.allowed_image_schemes)
            await asyncio.to_thread(check_endpoint, request, self._settings.allowed_endpoint_hosts)
        except InvalidRequestError as err:
            await self._reject(message, job_id_of(message.body) or UNKNOWN_JOB_ID, str(err))
            return
        log.info("job %s: %d image(s)", request.job_id, len(request.image_urls))
        try:
            failures = await self._process(request)
        except RetryableError as err:
            await self._retry_or_fail(message, request, str(err))
            return
        except Exception as err:  # a bug must not lose the message: treat as retryable
            log.exception("job %s: unexpected error", request.job_id)
            await self._retry_or_fail(message, request, f"internal error: {err!r}")
            return
        if failures:
            await self._queue.dead_letter(message, "; ".join(failures))
        else:
            await self._queue.delete(message)

    async def _process(self, request: ImageRequest) -> list[str]:
        failures = []
        for index, url in enumerate(request.image_urls):
            outcome = await self._pipeline.run(request, index)
            if outcome.status is Status.FAILED:
                failures.append(f"{url}: {outcome.reason}")
        return failures

    async def _reject(self, message: QueueMessage, job_id: str, reason: str) -> None:
        await self._status.publish(
            StatusEvent(status=Status.FAILED, job_id=job_id, description=reason)
        )
        await self._queue.dead_letter(message, reason)

    async def _retry_or_fail(
        self, message: QueueMessage, request: ImageRequest, reason: str
    ) -> None:
        if message.receive_count >= self._settings.max_attempts:
            for url in request.image_urls:
                await self._status.publish(
                    StatusEvent(
                        status=Status.FAILED,
                        job_id=request.job_id,
                        description=f"gave up after {message.receive_count} attempts: {reason}",
                        image_url=url,
                    )
                )
            await self._queue.dead_letter(message, reason)
            return
        base_s = self._settings.retry_delay_s
        delay_s = min(MAX_RETRY_DELAY_S, base_s * 2 ** (message.receive_count - 1))
        log.warning("job %s: %s; retrying in %ds", request.job_id, reason, delay_s)
        await self._queue.set_visibility(message, delay_s)

    async def _heartbeat(self, message: QueueMessage) -> None:
        timeout_s = self._settings.visibility_timeout_s
        while True:
            await asyncio.sleep(timeout_s / 3)
            try:
                await self._queue.set_visibility(message, timeout_s)
            except (BotoCoreError, ClientError) as err:
                log.warning("heartbeat for message %s failed: %s", message.message_id, err)
