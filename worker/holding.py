"""The worker's side of poison detection (the rule is in :mod:`worker.poison`): it keeps its
beat in the fleet registry, and records a hold on every message it works on.

The records are best effort: if the store cannot be reached, the message is judged by its
receive count alone (as :meth:`worker.settling.Settler.abandoned` says) and work goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from worker.errors import RetryableError
from worker.poison import WINDOW_S, FleetEntry, Verdict, beat_interval, judge
from worker.ports import HoldStore

log = logging.getLogger(__name__)

FORGET_EVERY_BEATS = 60


@dataclass(slots=True)
class Attempt:
    """One worker's attempt at a message: its hold and what the message's history says.
    ``failed`` is set when the attempt ends with an error (a retry)."""

    key: str
    index: int
    verdict: Verdict
    failed: bool = False


class Holder:
    """Records this worker's holds and beats."""

    def __init__(
        self, store: HoldStore, worker: str, visibility_timeout_s: float, max_receives: int
    ) -> None:
        """Beat often enough for ``visibility_timeout_s``; judge by ``max_receives``."""
        self._store = store
        self.worker = worker
        self.interval_s = beat_interval(visibility_timeout_s)
        self._max_receives = max_receives
        self._started = time.time()

    async def begin(self, key: str, receive_count: int) -> Attempt | None:
        """Record the hold and judge the message; None if the store cannot be reached."""
        now = time.time()
        try:
            holds, index = await self._store.begin(key, self.worker, now)
            fleet = await self._store.fleet() if holds else {}
        except RetryableError as err:
            log.warning("message %s: hold not recorded: %s", key, err)
            return None
        verdict = judge(holds, fleet, now, receive_count, self._max_receives)
        if verdict.deaths:
            log.info(
                "message %s: %d earlier worker(s) died working on it (%.2f expected from the"
                " fleet's death rate), %d attempt(s) failed with an error",
                key,
                verdict.deaths,
                verdict.expected_deaths,
                verdict.errors,
            )
        return Attempt(key, index, verdict)

    async def end(self, attempt: Attempt | None, error: bool) -> None:
        """End the hold (best effort: a hold left open by a live worker is not a death)."""
        if attempt is None:
            return
        try:
            await self._store.end(attempt.key, attempt.index, time.time(), error or attempt.failed)
        except RetryableError as err:
            log.warning("message %s: hold not ended: %s", attempt.key, err)

    async def beat_forever(self) -> None:
        """Beat every interval; now and then forget workers gone for longer than the window."""
        beats = 0
        while True:
            await self._beat(exited=False)
            beats += 1
            if beats % FORGET_EVERY_BEATS == 1:
                await self._forget_gone()
            await asyncio.sleep(self.interval_s)

    async def exit(self) -> None:
        """Say this worker stopped cleanly (its silence from now on is not a death); a store
        that does not answer within a beat interval does not hold up the exit."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._beat(exited=True), self.interval_s)

    async def _beat(self, exited: bool) -> None:
        entry = FleetEntry(self._started, time.time(), self.interval_s, exited)
        try:
            await self._store.beat(self.worker, entry)
        except RetryableError as err:
            log.warning("fleet registry beat failed: %s", err)

    async def _forget_gone(self) -> None:
        now = time.time()
        try:
            fleet = await self._store.fleet()
            gone = [w for w, e in fleet.items() if e.alive_until(now) < now - WINDOW_S]
            if gone:
                await self._store.forget(gone)
        except RetryableError as err:
            log.warning("fleet registry clean-up failed: %s", err)
