"""The worker loop: take regions first, then images; settle every message.

Routing: a message that cannot be parsed, or whose images fail permanently, gets a FAILED status
and goes to the dead-letter queue; a retryable failure releases the message for another try
until ``max_attempts``, then its images (or its region's tiles) are failed and the message is
dead-lettered the same way. A message received ``max_receives`` times without being settled
(its workers died) is failed before any work. Nothing is deleted without a terminal status or a
recorded region.

Up to ``max_in_flight`` messages are worked on at once. On stop the loop takes no new work,
gives what is in hand ``grace_period_s`` to finish, then releases the rest (visibility 0) so
another worker takes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from worker.capacity import CapacityGate
from worker.contract.messages import (
    ImageRequest,
    RegionRequest,
    job_id_of,
    parse_image_request,
    parse_region_request,
)
from worker.contract.status import Status, StatusEvent
from worker.coordinator import Coordinator
from worker.errors import (
    FinalisingElsewhere,
    InvalidRequestError,
    PermanentError,
    RetryableError,
)
from worker.health import touch
from worker.metrics import (
    MetricsWriter,
    capacity_wait_values,
    queue_wait_values,
    set_log_context,
)
from worker.policy import check_endpoint, check_image_urls
from worker.ports import MessageQueue, QueueMessage, StatusPublisher
from worker.settings import Settings

log = logging.getLogger(__name__)

UNKNOWN_JOB_ID = "unknown"
RECEIVE_BACKOFF_CAP_S = 30.0
MAX_RETRY_DELAY_S = 900
MAX_DELAY_S = 900  # SQS DelaySeconds limit
BUSY_WAKE_S = 5.0


@dataclass(frozen=True, slots=True)
class Work:
    """A received message and the queue it came from."""

    queue: MessageQueue
    message: QueueMessage
    is_region: bool


class Worker:
    """Long-running consumer of the region and image queues."""

    def __init__(
        self,
        settings: Settings,
        image_queue: MessageQueue,
        region_queue: MessageQueue,
        coordinator: Coordinator,
        status: StatusPublisher,
        stop: asyncio.Event,
        metrics: MetricsWriter | None = None,
        capacity: CapacityGate | None = None,
    ) -> None:
        """Consume the queues until ``stop`` is set; hold jobs back when ``capacity`` says so."""
        self._settings = settings
        self._images = image_queue
        self._regions = region_queue
        self._coordinator = coordinator
        self._status = status
        self._stop = stop
        self._metrics = metrics
        self._capacity = capacity
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Poll until stopped; one failure never stops the loop. Then drain and return."""
        errors = 0
        log.info("worker polling %s", getattr(self._images, "queue_url", "the image queue"))
        stopping = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                touch(self._settings.health_file)
                if len(self._tasks) >= self._settings.max_in_flight:
                    await asyncio.wait(  # wakes at least every few seconds: liveness
                        {*self._tasks, stopping},
                        timeout=BUSY_WAKE_S,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    continue
                try:
                    work = await self._receive()
                    errors = 0
                except Exception:  # the loop is the one place that catches everything
                    errors += 1
                    delay = random.uniform(0, min(RECEIVE_BACKOFF_CAP_S, 0.5 * 2**errors))
                    log.exception("worker loop error; backing off %.1fs", delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(stopping), delay)
                    continue
                if work is None:
                    continue
                if self._stop.is_set():
                    await self._release(work)
                    break
                task = asyncio.create_task(self.handle(work))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            stopping.cancel()
        await self._drain()
        log.info("worker stopped")

    async def _receive(self) -> Work | None:
        """A region if there is one (short wait), else an image (long poll)."""
        settings = self._settings
        for queue, wait_s, is_region in (
            (self._regions, settings.region_poll_wait_s, True),
            (self._images, settings.poll_wait_s, False),
        ):
            messages = await queue.receive(1, wait_s, settings.visibility_timeout_s)
            if messages:
                return Work(queue, messages[0], is_region)
        return None

    async def _drain(self) -> None:
        if not self._tasks:
            return
        grace_s = self._settings.grace_period_s
        log.info("stopping: %d message(s) in hand, %.0fs to finish", len(self._tasks), grace_s)
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _release(self, work: Work) -> None:
        try:
            await work.queue.set_visibility(work.message, 0)
            log.info("released message %s for another worker", work.message.message_id)
        except (BotoCoreError, ClientError) as err:
            log.warning("could not release message %s: %s", work.message.message_id, err)

    async def handle(self, work: Work) -> None:
        """Process one message and settle it (delete, release or dead-letter)."""
        heartbeat = asyncio.create_task(self._heartbeat(work))
        set_log_context(message_id=work.message.message_id)
        sent_at_s = work.message.sent_at_s
        if self._metrics is not None and sent_at_s is not None:
            self._metrics.write(
                {"Queue": "region" if work.is_region else "image"},
                queue_wait_values(time.time() - sent_at_s),
            )
        try:
            if work.is_region:
                await self._handle_region(work)
            else:
                await self._handle_image(work)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(work))
            raise
        except Exception:  # the message stays for a retry after its visibility timeout
            log.exception("message %s: unexpected error while settling", work.message.message_id)
        finally:
            heartbeat.cancel()

    # ---- images ---------------------------------------------------------------------------

    async def _handle_image(self, work: Work) -> None:
        message = work.message
        try:
            request = parse_image_request(message.body, self._settings.request_limits)
            check_image_urls(request, self._settings.allowed_image_schemes)
            await asyncio.to_thread(check_endpoint, request, self._settings.allowed_endpoint_hosts)
        except InvalidRequestError as err:
            await self._reject(work, job_id_of(message.body) or UNKNOWN_JOB_ID, str(err))
            return
        if message.receive_count > self._settings.max_receives:
            await self._give_up_images(work, request, self._abandoned(message))
            return
        if not await self._admitted(work, request):
            return
        log.info("job %s: %d image(s)", request.job_id, len(request.image_urls))
        try:
            failures = []
            for index in range(len(request.image_urls)):
                failure = await self._coordinator.start_image(
                    request, index, message.body, message.submission_id
                )
                if failure:
                    failures.append(failure)
        except FinalisingElsewhere as err:
            await self._look_again(work, err)
            return
        except (RetryableError, PermanentError, BotoCoreError, ClientError) as err:
            await self._retry_or_fail_images(work, request, str(err))
            return
        except Exception as err:  # a bug must not lose the message: treat as retryable
            log.exception("job %s: unexpected error", request.job_id)
            await self._retry_or_fail_images(work, request, f"internal error: {err!r}")
            return
        if failures:
            await work.queue.dead_letter(message, "; ".join(failures))
        else:
            await work.queue.delete(message)

    async def _admitted(self, work: Work, request: ImageRequest) -> bool:
        """Whether the job may start now; if not, it goes back to wait for endpoint capacity.

        A waiting job is sent again with a delay and the received copy deleted, so waiting
        does not count toward the receives that send a failing message to the DLQ.
        """
        if self._capacity is None:
            return True
        try:
            admission = await self._capacity.admit(request)
        except (BotoCoreError, ClientError) as err:  # an estimate never blocks a job
            log.warning("job %s: capacity unknown, starting: %s", request.job_id, err)
            return True
        if admission.admitted:
            return True
        endpoint = request.image_processor.name
        reason = admission.describe(endpoint)
        delay_s = self._settings.capacity_retry_s
        log.info("job %s waits %ds for capacity: %s", request.job_id, delay_s, reason)
        await self._status.publish(
            StatusEvent(
                status=Status.IN_PROGRESS,
                job_id=request.job_id,
                description=f"waiting for endpoint capacity ({reason})",
            )
        )
        if self._metrics is not None:
            self._metrics.write({"Model": endpoint}, capacity_wait_values())
        await self._send_again(work, delay_s)
        return False

    async def _reject(self, work: Work, job_id: str, reason: str) -> None:
        await self._status.publish(
            StatusEvent(status=Status.FAILED, job_id=job_id, description=reason)
        )
        await work.queue.dead_letter(work.message, reason)

    async def _retry_or_fail_images(self, work: Work, request: ImageRequest, reason: str) -> None:
        if work.message.receive_count >= self._settings.max_attempts:
            reason = f"gave up after {work.message.receive_count} attempts: {reason}"
            await self._give_up_images(work, request, reason)
            return
        await self._retry_later(work, request.job_id, reason)

    async def _give_up_images(self, work: Work, request: ImageRequest, reason: str) -> None:
        for index in range(len(request.image_urls)):
            await self._coordinator.fail_image(request, index, reason, work.message.submission_id)
        await work.queue.dead_letter(work.message, reason)

    # ---- regions --------------------------------------------------------------------------

    async def _handle_region(self, work: Work) -> None:
        message = work.message
        try:
            region, request = parse_region_request(message.body, self._settings.request_limits)
        except InvalidRequestError as err:
            await self._reject(work, job_id_of(message.body) or UNKNOWN_JOB_ID, str(err))
            return
        if message.receive_count > self._settings.max_receives:
            await self._give_up_region(work, region, request, self._abandoned(message))
            return
        try:
            await self._coordinator.run_region(region, request)
        except FinalisingElsewhere as err:
            await self._look_again(work, err)
            return
        except PermanentError as err:
            await self._give_up_region(work, region, request, str(err))
            return
        except (RetryableError, BotoCoreError, ClientError) as err:
            await self._retry_or_fail_region(work, region, request, str(err))
            return
        except Exception as err:  # a bug must not lose the region: treat as retryable
            log.exception("job %s region %d: unexpected error", region.job_id, region.region_id)
            await self._retry_or_fail_region(work, region, request, f"internal error: {err!r}")
            return
        await work.queue.delete(message)

    async def _retry_or_fail_region(
        self, work: Work, region: RegionRequest, request: ImageRequest, reason: str
    ) -> None:
        if work.message.receive_count >= self._settings.max_attempts:
            reason = f"gave up after {work.message.receive_count} attempts: {reason}"
            await self._give_up_region(work, region, request, reason)
            return
        await self._retry_later(work, region.job_id, reason)

    async def _give_up_region(
        self, work: Work, region: RegionRequest, request: ImageRequest, reason: str
    ) -> None:
        log.warning("job %s region %d failed: %s", region.job_id, region.region_id, reason)
        await self._coordinator.give_up_region(region, request, reason)
        await work.queue.dead_letter(work.message, f"region {region.region_id}: {reason}")

    # ---- common ---------------------------------------------------------------------------

    async def _look_again(self, work: Work, err: FinalisingElsewhere) -> None:
        """Send the message again for when the finalisation lease will have expired."""
        delay_s = math.ceil(err.retry_after_s) + 1
        log.info("%s; looking again in %ds", err, delay_s)
        await self._send_again(work, delay_s)

    @staticmethod
    async def _send_again(work: Work, delay_s: int) -> None:
        """A fresh copy of the message, visible after ``delay_s``; the received one deleted.

        Waiting (for capacity, for a live finaliser) this way does not count toward the
        receives that dead-letter a message, as a longer visibility would. The copy carries the
        submission id: it is the same request, not a new submission of it.
        """
        await work.queue.send(
            work.message.body, min(MAX_DELAY_S, delay_s), work.message.submission_id
        )
        await work.queue.delete(work.message)

    def _abandoned(self, message: QueueMessage) -> str:
        return (
            f"message received {message.receive_count} times without finishing (the workers"
            f" handling it stopped; limit MODELRUNNER_MAX_RECEIVES={self._settings.max_receives})"
        )

    async def _retry_later(self, work: Work, job_id: str, reason: str) -> None:
        base_s = self._settings.retry_delay_s
        delay_s = min(MAX_RETRY_DELAY_S, base_s * 2 ** (work.message.receive_count - 1))
        log.warning("job %s: %s; retrying in %ds", job_id, reason, delay_s)
        await work.queue.set_visibility(work.message, delay_s)

    async def _heartbeat(self, work: Work) -> None:
        timeout_s = self._settings.visibility_timeout_s
        while True:
            await asyncio.sleep(timeout_s / 3)
            try:
                await work.queue.set_visibility(work.message, timeout_s)
            except (BotoCoreError, ClientError) as err:
                log.warning("heartbeat for message %s failed: %s", work.message.message_id, err)
