"""A concurrency limit per endpoint that follows its latency (a gradient limit, after Netflix's
concurrency-limits Gradient and Vegas), not only its throttling replies.

An endpoint that queues work answers more slowly as more calls are in flight; one that scales
answers as fast. So the limit is adjusted once per window of about ``limit`` calls: with ``rtt``
the window's mean call latency and ``baseline`` the lowest window mean seen recently (the
latency without a queue),

    gradient = clamp(TOLERANCE * baseline / rtt, 0.5, 1)
    limit    = limit * gradient + sqrt(limit)

The square root is the queue the endpoint may keep: with no queue (gradient 1) the limit grows
by sqrt(limit) per window; when the latency climbs past TOLERANCE x baseline the limit shrinks
until only that queue is left. The mean, not the median, is used so that a few very slow calls
count: a server whose accept queue overflows drops connection attempts, and each comes back a
second later (a TCP SYN retransmission). A call that takes over ``DROP_S`` and
``DROP_FACTOR`` x baseline, a connection error or timeout, and a throttling reply are overload
signals: the limit halves at once (at most once per ``DECREASE_GUARD_S``, so one burst counts
once) and then grows back only to ``CEILING_SHARE`` of the limit that overloaded the endpoint,
probing one call higher every ``CEILING_S`` without another overload (TCP's slow-start
threshold, in effect): a server that drops connections past some concurrency is not pushed
there again and again. The limit stays between ``minimum`` and ``maximum``, starts at
``initial`` (the floor by default: growing is fast, while a first burst of dropped connections
costs a second), and does not grow while fewer than half of it are in use (the caller, not the
endpoint, sets the pace then).

:class:`GradientLimit` is the pure rule (an injectable clock, no asyncio);
:class:`GradientLimiter` holds calls to it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable

from worker.limiter import RuledLimiter

log = logging.getLogger(__name__)

TOLERANCE = 1.5
MIN_GRADIENT = 0.5
MIN_WINDOW_CALLS = 4
BASELINE_S = 30.0  # how long a low window mean stays the baseline
DROP_S = 0.9  # a TCP SYN retransmission takes 1 s
DROP_FACTOR = 5.0
DECREASE_GUARD_S = 0.5
CEILING_SHARE = 0.8  # after an overload, grow to this share of the limit that caused it...
CEILING_S = 5.0  # ... and by one more per this many seconds without another


class GradientLimit:
    """The limit and the rule that moves it; fed one sample per finished call."""

    def __init__(
        self,
        maximum: int,
        minimum: int = 1,
        initial: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A limit between ``minimum`` and ``maximum``, starting at ``initial`` (default
        ``minimum``); ``clock`` gives seconds."""
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.limit = float(max(self.minimum, min(maximum, initial or self.minimum)))
        self._clock = clock
        self._window: list[float] = []
        self._busiest = 0
        self._baselines: deque[tuple[float, float]] = deque()  # (time, window mean)
        self._last_decrease = -math.inf
        self._ceiling: float | None = None  # below the last limit that overloaded the endpoint
        self._ceiling_since = -math.inf

    @property
    def baseline_s(self) -> float | None:
        """The latency without a queue, as far as seen lately (None before any window)."""
        return min((mean for _, mean in self._baselines), default=None)

    def sample(
        self, latency_s: float, in_flight: int, *, throttled: bool = False, failed: bool = False
    ) -> None:
        """One call finished after ``latency_s`` with ``in_flight`` calls (itself included)
        under the limit; ``throttled``: the endpoint said so; ``failed``: no reply at all."""
        baseline = self.baseline_s
        dropped = baseline is not None and latency_s > DROP_S and latency_s > DROP_FACTOR * baseline
        if throttled or failed or dropped:
            self._decrease()
            if throttled or failed:
                return
        self._window.append(latency_s)
        self._busiest = max(self._busiest, in_flight)
        if len(self._window) >= max(MIN_WINDOW_CALLS, int(self.limit)):
            self._close_window()

    def _decrease(self) -> None:
        now = self._clock()
        if now - self._last_decrease >= DECREASE_GUARD_S:
            self._ceiling = max(float(self.minimum), CEILING_SHARE * self.limit)
            self.limit = max(float(self.minimum), self.limit * MIN_GRADIENT)
            self._last_decrease = self._ceiling_since = now
            log.debug("overload: limit %.1f, ceiling %.1f", self.limit, self._ceiling)
            self._window.clear()
            self._busiest = 0

    def _close_window(self) -> None:
        now = self._clock()
        rtt = sum(self._window) / len(self._window)
        busiest = self._busiest
        self._window.clear()
        self._busiest = 0
        while self._baselines and now - self._baselines[0][0] > BASELINE_S:
            self._baselines.popleft()
        while self._baselines and self._baselines[-1][1] >= rtt:
            self._baselines.pop()  # a lower, newer mean makes older, higher ones irrelevant
        self._baselines.append((now, rtt))
        baseline = self.baseline_s or rtt
        gradient = max(MIN_GRADIENT, min(1.0, TOLERANCE * baseline / rtt)) if rtt > 0 else 1.0
        target = self.limit * gradient + math.sqrt(self.limit)
        if busiest < self.limit / 2:
            target = min(target, self.limit)  # not using the limit: no evidence to grow on
        if self._ceiling is not None and now - self._ceiling_since >= CEILING_S:
            self._ceiling += 1.0  # probe above the limit that overloaded the endpoint, slowly
            self._ceiling_since = now
        if self._ceiling is not None:
            target = min(target, max(self.limit, self._ceiling))
        self.limit = max(float(self.minimum), min(float(self.maximum), target))
        log.debug(
            "window: mean %.1f ms, baseline %.1f ms, %d in flight at most; limit %.1f",
            1000 * rtt,
            1000 * baseline,
            busiest,
            self.limit,
        )


class GradientLimiter(RuledLimiter):
    """Holds calls to an endpoint under a :class:`GradientLimit`."""

    def __init__(
        self,
        maximum: int,
        minimum: int = 1,
        initial: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Between ``minimum`` and ``maximum`` calls in flight; ``clock`` times the calls."""
        super().__init__(GradientLimit(maximum, minimum, initial, clock), clock)
