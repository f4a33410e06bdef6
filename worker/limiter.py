"""An AIMD concurrency limit per endpoint: grow slowly while calls succeed, halve on throttling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

DECREASE_GUARD_S = 0.5


class Slot:
    """One call's place under the limit; tell it when the endpoint throttled or failed."""

    def __init__(self) -> None:
        """A slot whose call has not been throttled."""
        self.was_throttled = False
        self.was_overloaded = False

    def throttled(self) -> None:
        """The endpoint asked to slow down (429, 503, ThrottlingException)."""
        self.was_throttled = True

    def overloaded(self) -> None:
        """The call could not connect or timed out: a sign of overload too."""
        self.was_overloaded = True


class Limiter(Protocol):
    """A concurrency limit on one endpoint's calls."""

    def slot(self) -> AbstractAsyncContextManager[Slot]:
        """Wait for room under the limit, hold it for one call."""
        ...


class AimdLimiter:
    """Additive increase (one per ``limit`` successes), multiplicative decrease (halve).

    A burst of throttled replies from calls that were in flight together halves the limit
    once: decreases closer together than ``DECREASE_GUARD_S`` count as one.
    """

    def __init__(self, maximum: int, minimum: int = 1) -> None:
        """Start at ``maximum`` calls in flight; never go below ``minimum``."""
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(maximum)
        self.in_flight = 0
        self._changed = asyncio.Condition()
        self._last_decrease = -DECREASE_GUARD_S

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Wait for room under the limit, hold it for one call."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        slot = Slot()
        try:
            yield slot
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._adjust(slot.was_throttled)
                self._changed.notify_all()

    def _adjust(self, throttled: bool) -> None:
        now = time.monotonic()
        if throttled:
            if now - self._last_decrease >= DECREASE_GUARD_S:
                self.limit = max(float(self.minimum), self.limit / 2)
                self._last_decrease = now
        else:
            self.limit = min(float(self.maximum), self.limit + 1 / self.limit)
