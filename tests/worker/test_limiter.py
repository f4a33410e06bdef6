"""The AIMD limit: never more calls than the limit, halve on throttling, grow on success."""

import asyncio

from worker.limiter import DECREASE_GUARD_S, AimdLimiter


def test_limit_holds_halves_and_grows() -> None:
    async def scenario() -> None:
        limiter = AimdLimiter(8)
        peak = 0

        async def call(throttle: bool) -> None:
            nonlocal peak
            async with limiter.slot() as slot:
                peak = max(peak, limiter.in_flight)
                await asyncio.sleep(0.01)
                if throttle:
                    slot.throttled()

        await asyncio.gather(*(call(False) for _ in range(40)))
        assert peak == 8
        await asyncio.gather(*(call(True) for _ in range(8)))  # one burst: one halving
        assert limiter.limit == 4
        await asyncio.sleep(DECREASE_GUARD_S)
        await call(True)
        assert limiter.limit == 2
        peak = 0
        await asyncio.gather(*(call(False) for _ in range(6)))
        assert peak <= 3  # the limit grows by about one per limit successes
        assert 2 < limiter.limit < 8
        for _ in range(4):
            await asyncio.sleep(DECREASE_GUARD_S)
            await call(True)
        assert limiter.limit == 1  # never below the minimum

    asyncio.run(scenario())
