"""The worker loop: take regions first, then images; hand each message to its handler.

Handlers (:mod:`worker.handlers`) settle every message; the loop keeps a message in hand
invisible to other workers (a heartbeat every third of the visibility timeout), and never stops
on an error. Up to ``max_in_flight`` messages are worked on at once. On stop the loop takes no
new work, gives what is in hand ``grace_period_s`` to finish, then releases the rest
(visibility 0) so another worker takes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from worker.errors import RetryableError, WorkerError
from worker.health import touch
from worker.holding import Holder
from worker.metrics import MetricsWriter, queue_wait_values, set_log_context
from worker.polling import Poller, Source
from worker.ports import MessageQueue
from worker.settling import Work

log = logging.getLogger(__name__)

RECEIVE_BACKOFF_CAP_S = 30.0
BUSY_WAKE_S = 5.0


class Handler(Protocol):
    """Processes one kind of message and settles it."""

    async def handle(self, work: Work) -> None:
        """Process the message; delete, release or dead-letter it."""
        ...


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """What the loop is told (``MODELRUNNER_*`` settings)."""

    max_in_flight: int
    poll_wait_s: int
    region_poll_wait_s: int
    visibility_timeout_s: int
    grace_period_s: float
    health_file: str | None = None
    sweep_interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Queues:
    """The queues the loop takes work from, and the handler of each."""

    images: MessageQueue
    image_handler: Handler
    regions: MessageQueue
    region_handler: Handler


class Worker:
    """Long-running consumer of the region and image queues."""

    def __init__(
        self,
        settings: LoopSettings,
        queues: Queues,
        stop: asyncio.Event,
        metrics: MetricsWriter | None = None,
        sweep: Callable[[], Awaitable[object]] | None = None,
        holder: Holder | None = None,
    ) -> None:
        """Consume the queues until ``stop`` is set; call ``sweep`` every
        ``sweep_interval_s`` or so (:mod:`worker.sweeper`); record holds and beats through
        ``holder`` (:mod:`worker.holding`)."""
        self._settings = settings
        self._queues = queues
        self._images = queues.images
        self._regions = queues.regions
        self._stop = stop
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweep = sweep
        self._holder = holder

    async def run(self) -> None:
        """Poll until stopped; one failure never stops the loop. Then drain and return."""
        errors = 0
        log.info("worker polling %s", getattr(self._images, "queue_url", "the image queue"))
        stopping = asyncio.create_task(self._stop.wait())
        sweeping = asyncio.create_task(self._sweep_periodically())
        beating = asyncio.create_task(self._holder.beat_forever()) if self._holder else None
        poller = self._poller()
        try:
            while not self._stop.is_set():
                touch(self._settings.health_file)
                room = self._settings.max_in_flight - len(self._tasks)
                if room <= 0:
                    await asyncio.wait(  # wakes at least every few seconds: liveness
                        {*self._tasks, stopping},
                        timeout=BUSY_WAKE_S,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    continue
                try:
                    works = await poller.next(room, {*self._tasks, stopping})
                    errors = 0
                except Exception:  # the loop is the one place that catches everything
                    errors += 1
                    delay = random.uniform(0, min(RECEIVE_BACKOFF_CAP_S, 0.5 * 2**errors))
                    log.exception("worker loop error; backing off %.1fs", delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(stopping), delay)
                    continue
                for work in works:
                    if self._stop.is_set():
                        await self._release(work)
                        continue
                    task = asyncio.create_task(self.handle(work))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            stopping.cancel()
            sweeping.cancel()
        released = asyncio.create_task(self._release_polled(poller))
        await self._drain()
        await released
        if beating is not None and self._holder is not None:
            beating.cancel()
            await self._holder.exit()
        log.info("worker stopped")

    def _poller(self) -> Poller:
        settings = self._settings
        return Poller(
            Source(self._regions, settings.region_poll_wait_s, True),
            Source(self._images, settings.poll_wait_s, False),
            max(settings.poll_wait_s, settings.region_poll_wait_s),
            settings.visibility_timeout_s,
        )

    async def _release_polled(self, poller: Poller) -> None:
        """Release what the polls open at the stop bring."""
        for work in await poller.close():
            await self._release(work)

    async def _sweep_periodically(self) -> None:
        """Sweep at random times between half and all of the interval apart, so the fleet's
        sweeps spread out; a failed sweep is logged and the next one tried."""
        if self._sweep is None:
            return
        while True:
            await asyncio.sleep(self._settings.sweep_interval_s * random.uniform(0.5, 1.0))
            try:
                await self._sweep()
            except Exception:  # the loop is the one place that catches everything
                log.exception("sweep failed; trying again at the next one")

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
        """Make the message visible again at once (best effort: if it cannot be, it comes
        back after its visibility timeout, and stopping goes on)."""
        try:
            await work.queue.set_visibility(work.message, 0)
            log.info("released message %s for another worker", work.message.message_id)
        except WorkerError as err:  # retryable or not (a receipt that expired meanwhile)
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
        handler = self._queues.region_handler if work.is_region else self._queues.image_handler
        holder = self._holder
        error = False
        try:
            if holder is not None:
                attempt = await holder.begin(work.key, work.message.receive_count)
                work = replace(work, attempt=attempt)
            await handler.handle(work)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(work))
            if holder is not None:
                await asyncio.shield(holder.end(work.attempt, error=False))
            raise
        except Exception:  # the message stays for a retry after its visibility timeout
            error = True
            log.exception("message %s: unexpected error while settling", work.message.message_id)
        finally:
            heartbeat.cancel()
        if holder is not None:
            await holder.end(work.attempt, error)

    async def _heartbeat(self, work: Work) -> None:
        timeout_s = self._settings.visibility_timeout_s
        while True:
            await asyncio.sleep(timeout_s / 3)
            try:
                await work.queue.set_visibility(work.message, timeout_s)
            except RetryableError as err:
                log.warning("heartbeat for message %s failed: %s", work.message.message_id, err)
