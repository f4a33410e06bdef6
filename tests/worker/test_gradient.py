"""The gradient limit: shrinks when latency rises or connections drop, grows back when the
endpoint keeps up; a fake clock, no sleeping."""

import asyncio

import pytest

from worker.gradient import (
    CEILING_S,
    CEILING_SHARE,
    DECREASE_GUARD_S,
    GradientLimit,
    GradientLimiter,
)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def feed(rule: GradientLimit, clock: FakeClock, latency_s: float, calls: int) -> None:
    """``calls`` calls finishing after ``latency_s`` each, the limit fully used."""
    for _ in range(calls):
        clock.advance(latency_s / max(1.0, rule.limit))
        rule.sample(latency_s, int(rule.limit))


def test_grows_to_the_maximum_while_latency_stays_flat() -> None:
    clock = FakeClock()
    rule = GradientLimit(32, minimum=2, clock=clock)
    assert rule.limit == 2  # starts at the floor
    feed(rule, clock, 0.050, 200)
    assert rule.limit == 32


def test_shrinks_under_latency_that_rises_with_concurrency() -> None:
    # A server that serves one call at a time: latency = calls in flight x 10 ms.
    clock = FakeClock()
    rule = GradientLimit(32, minimum=1, initial=2, clock=clock)
    feed(rule, clock, 0.020, 8)  # the baseline: 2 in flight
    limits = []
    for _ in range(400):
        latency_s = 0.010 * int(rule.limit)
        clock.advance(latency_s / rule.limit)
        rule.sample(latency_s, int(rule.limit))
        limits.append(rule.limit)
    assert max(limits[-100:]) <= 8  # held near the point where latency starts to climb
    assert min(limits[-100:]) >= 1


def test_rising_latency_brings_a_high_limit_down() -> None:
    clock = FakeClock()
    rule = GradientLimit(32, minimum=2, initial=32, clock=clock)
    feed(rule, clock, 0.050, 64)
    assert rule.limit == 32
    for latency_s in (0.1, 0.2, 0.4):
        feed(rule, clock, latency_s, 64)
    assert rule.limit < 12


def test_dropped_connections_halve_and_cap_the_limit_then_it_grows_back() -> None:
    clock = FakeClock()
    rule = GradientLimit(16, minimum=2, clock=clock)
    feed(rule, clock, 0.010, 100)
    assert rule.limit == 16
    rule.sample(1.02, 16)  # a SYN retransmission: the accept queue overflowed
    assert rule.limit == 8
    rule.sample(1.03, 16)  # the same burst
    assert rule.limit == 8
    feed(rule, clock, 0.010, 200)
    assert rule.limit == pytest.approx(CEILING_SHARE * 16)  # grows back, to the ceiling only
    for _ in range(8):
        clock.advance(CEILING_S)
        feed(rule, clock, 0.010, 20)
    assert rule.limit == 16  # probing upwards, one call per CEILING_S


def test_connection_errors_and_throttling_halve_once_per_burst() -> None:
    clock = FakeClock()
    rule = GradientLimit(16, minimum=2, initial=16, clock=clock)
    rule.sample(0.01, 16, failed=True)
    rule.sample(0.01, 16, failed=True)
    assert rule.limit == 8
    clock.advance(DECREASE_GUARD_S)
    rule.sample(0.01, 8, throttled=True)
    assert rule.limit == 4
    for _ in range(5):
        clock.advance(DECREASE_GUARD_S)
        rule.sample(0.01, 4, failed=True)
    assert rule.limit == 2  # never below the floor


def test_does_not_grow_when_the_caller_does_not_use_the_limit() -> None:
    clock = FakeClock()
    rule = GradientLimit(32, minimum=4, clock=clock)
    for _ in range(100):
        clock.advance(0.01)
        rule.sample(0.01, 1)
    assert rule.limit == 4


def test_limiter_holds_calls_to_the_limit_and_times_them() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        limiter = GradientLimiter(8, minimum=2, clock=clock)
        peak = 0

        async def call(latency_s: float) -> None:
            nonlocal peak
            async with limiter.slot():
                peak = max(peak, limiter.in_flight)
                await asyncio.sleep(0)
                clock.advance(latency_s)

        await asyncio.gather(*(call(0.0) for _ in range(6)))
        assert peak <= 2  # starts at the floor
        for _ in range(20):
            await asyncio.gather(*(call(0.001) for _ in range(8)))
        assert limiter.limit == 8
        async with limiter.slot() as slot:
            slot.overloaded()
        assert limiter.limit == 4

    asyncio.run(scenario())
