"""Holds and the fleet registry in the job table (worker/adapters/holds.py), against a real
moto server on 127.0.0.1: the same rules as the in-memory fake the loop tests use."""

import asyncio
import uuid

from tests.worker.test_jobstore import endpoint, with_store
from worker.adapters.dynamodb import DynamoJobStore
from worker.adapters.holds import DynamoHoldStore
from worker.poison import FleetEntry, Hold

__all__ = ["endpoint"]  # the module's moto server


def holds_of(jobs: DynamoJobStore) -> DynamoHoldStore:
    return DynamoHoldStore(jobs._client, jobs._table, ttl_days=1)


def test_holds_are_appended_ended_and_returned(endpoint: str) -> None:
    key = f"region#{uuid.uuid4()}"

    async def test(jobs: DynamoJobStore) -> None:
        store = holds_of(jobs)
        assert await store.begin(key, "a", 100.0) == ([], 0)
        await store.end(key, 0, 105.5, error=True)
        before, index = await store.begin(key, "b", 200.0)
        assert (before, index) == ([Hold("a", 100.0, 105.5, True)], 1)
        before, index = await store.begin(key, "c", 300.0)
        assert before == [Hold("a", 100.0, 105.5, True), Hold("b", 200.0)]  # b never ended
        assert index == 2

    with_store(endpoint, test)


def test_two_workers_starting_at_once_both_land(endpoint: str) -> None:
    key = f"image#{uuid.uuid4()}"

    async def test(jobs: DynamoJobStore) -> None:
        store = holds_of(jobs)
        results = await asyncio.gather(*(store.begin(key, f"w{i}", 10.0 + i) for i in range(6)))
        assert sorted(index for _, index in results) == list(range(6))
        last, index = await store.begin(key, "late", 50.0)
        assert (len(last), index) == (6, 6)

    with_store(endpoint, test)


def test_the_fleet_registry(endpoint: str) -> None:
    async def test(jobs: DynamoJobStore) -> None:
        store = holds_of(jobs)
        mine = {f"w-{uuid.uuid4().hex[:6]}": FleetEntry(1.0, 2.5 + i, 1.5) for i in range(3)}
        for worker, entry in mine.items():
            await store.beat(worker, entry)
        first = next(iter(mine))
        await store.beat(first, FleetEntry(1.0, 9.0, 1.5, exited=True))
        fleet = await store.fleet()
        assert fleet[first] == FleetEntry(1.0, 9.0, 1.5, exited=True)
        assert all(fleet[w] == e for w, e in mine.items() if w != first)
        await store.forget(list(mine)[:2])
        assert set(mine) & set(await store.fleet()) == {list(mine)[2]}
        # The registry and the holds are not image records: the job store never lists them.
        stalled = await jobs.stalled(1e12)
        assert all(not job.startswith(("fleet", "hold")) for job, _ in stalled)

    with_store(endpoint, test)
