"""Concurrency limits per endpoint: calls held under a rule's limit; the AIMD rule (grow slowly
while calls succeed, halve on throttling). The latency-gradient rule is in
:mod:`worker.gradient`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
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


class LimitRule(Protocol):
    """How a limit moves: read as ``limit``, told how each call went."""

    limit: float

    def sample(
        self, latency_s: float, in_flight: int, *, throttled: bool = False, failed: bool = False
    ) -> None:
        """One call finished after ``latency_s`` with ``in_flight`` calls (itself included);
        ``throttled``: the endpoint said so; ``failed``: no reply at all."""
        ...


class RuledLimiter:
    """Holds calls to an endpoint under a :class:`LimitRule`'s limit and tells the rule how
    each call went."""

    def __init__(self, rule: LimitRule, clock: Callable[[], float] = time.monotonic) -> None:
        """Calls held under ``rule``; ``clock`` times them."""
        self.rule = rule
        self.in_flight = 0
        self._clock = clock
        self._changed = asyncio.Condition()

    @property
    def limit(self) -> float:
        """The current limit."""
        return self.rule.limit

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Wait for room under the limit, hold it for one call and time the call."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < int(self.rule.limit))
            self.in_flight += 1
        slot = Slot()
        started = self._clock()
        try:
            yield slot
        finally:
            latency_s = self._clock() - started
            async with self._changed:
                in_flight = self.in_flight
                self.in_flight -= 1
                self.rule.sample(
                    latency_s, in_flight, throttled=slot.was_throttled, failed=slot.was_overloaded
                )
                self._changed.notify_all()


class AimdLimit:
    """Additive increase (one per ``limit`` successes), multiplicative decrease (halve).

    A burst of throttled replies from calls that were in flight together halves the limit
    once: decreases closer together than ``DECREASE_GUARD_S`` count as one. Latency and
    failed connections do not move it.
    """

    def __init__(self, maximum: int, minimum: int = 1) -> None:
        """Start at ``maximum`` calls in flight; never go below ``minimum``."""
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(maximum)
        self._last_decrease = -DECREASE_GUARD_S

    def sample(
        self, latency_s: float, in_flight: int, *, throttled: bool = False, failed: bool = False
    ) -> None:
        """Halve on throttling (once per burst), else grow by ``1 / limit``."""
        now = time.monotonic()
        if throttled:
            if now - self._last_decrease >= DECREASE_GUARD_S:
                self.limit = max(float(self.minimum), self.limit / 2)
                self._last_decrease = now
        else:
            self.limit = min(float(self.maximum), self.limit + 1 / self.limit)


class AimdLimiter(RuledLimiter):
    """Calls held under an :class:`AimdLimit`."""

    def __init__(self, maximum: int, minimum: int = 1) -> None:
        """Start at ``maximum`` calls in flight; never go below ``minimum``."""
        super().__init__(AimdLimit(maximum, minimum))
