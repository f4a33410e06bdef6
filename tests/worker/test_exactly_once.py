"""Exactly one outcome and one terminal status per image, whatever the order and the crashes.

The service's core on in-memory fakes (tests/service.py): two or more workers share one job
store, staging, status topic and queue; a worker dies at a chosen step (:class:`Crash`) and its
message comes back to another worker once its visibility timeout and lease have passed, as SQS
and the job record make happen. The process-level chaos tests (tests/functional) prove the same
against the real emulator; these cover every step in milliseconds.
"""

import asyncio
import dataclasses
import json

import pytest

from tests.fakes import Crash
from tests.service import (
    LEASE_S,
    FakeImages,
    MemorySink,
    Node,
    Shared,
    message,
    region_bodies,
    request_body,
)
from worker.contract.status import Status

JOB = "job-1"
OUTPUT = f"{JOB}.geojson"


def fleet(width: int = 900, sinks: int = 1) -> tuple[Shared, Node, Node]:
    shared = Shared(FakeImages(width, 400, [MemorySink(f"sink-{i}") for i in range(sinks)]))
    return shared, Node(shared, "worker-a"), Node(shared, "worker-b")


def start(shared: Shared, node: Node) -> list[str]:
    """The image request handled by ``node``: region 1 run; the other regions' messages."""
    asyncio.run(node.handle(message(request_body(JOB), "m-image")))
    return region_bodies(shared)


def assert_ended_once(shared: Shared, features: int, status: str = "SUCCESS") -> None:
    assert shared.jobs.finished == 1
    assert shared.terminal_statuses(JOB) == [status]
    record = shared.jobs.records[f"{JOB}:s3://images/a.tif"]
    assert record.final_status is Status(status)
    assert record.published
    assert not shared.staging.objects  # cleaned up after publication
    for sink in shared.images.sinks:
        assert len(sink.written[OUTPUT]) == features


@pytest.mark.parametrize("head_start_b", range(0, 10, 3))
@pytest.mark.parametrize("head_start_a", range(0, 10, 3))
def test_two_workers_finishing_the_last_two_regions(head_start_a: int, head_start_b: int) -> None:
    shared, a, b = fleet(width=1300)  # 3 regions: region 1 by the planner, 2 and 3 at once
    bodies = start(shared, a)
    assert len(bodies) == 2

    async def after(ticks: int, node: Node, body: str, message_id: str) -> None:
        for _ in range(ticks):
            await asyncio.sleep(0)
        await node.handle(message(body, message_id), is_region=True)

    async def both() -> None:
        await asyncio.gather(
            after(head_start_a, a, bodies[0], "m-region-2"),
            after(head_start_b, b, bodies[1], "m-region-3"),
        )

    asyncio.run(both())
    assert_ended_once(shared, features=shared.images.tiles_run)
    assert shared.images.finalised == 1
    assert set(shared.queue.deleted) == {"m-image", "m-region-2", "m-region-3"}


def crash_at(shared: Shared, step: str) -> None:
    """Make the next finalisation die at ``step``."""
    if step == "before outputs":
        shared.images.sinks[0].crash = "open"
    elif step == "between outputs":
        shared.images.sinks[1].crash = "close"  # the first output is complete, not the second
    else:
        shared.jobs.crash_after = {
            "after the outcome write": "finish",
            "after publishing": "mark_published",
        }[step]


@pytest.mark.parametrize(
    "step", ["before outputs", "between outputs", "after the outcome write", "after publishing"]
)
def test_a_finaliser_dying_at_each_step_is_replaced(step: str) -> None:
    shared, a, b = fleet(sinks=2)
    (last,) = start(shared, a)
    crash_at(shared, step)
    with pytest.raises(Crash):
        asyncio.run(a.handle(message(last, "m-region-2"), is_region=True))
    for sink in shared.images.sinks:
        sink.crash = ""
    assert "m-region-2" not in shared.queue.deleted  # the dead worker settled nothing

    # Its message comes back after the visibility timeout, to another worker; the dead
    # worker's lease has expired by then.
    shared.advance(LEASE_S + 1)
    asyncio.run(b.handle(message(last, "m-region-2", receive_count=2), is_region=True))

    assert_ended_once(shared, features=shared.images.tiles_run)
    assert "m-region-2" in shared.queue.deleted
    assert shared.images.tiles_run == 8  # the staged region was not run again


def test_a_worker_arriving_while_the_lease_is_live_looks_again_later() -> None:
    shared, a, b = fleet()
    (last,) = start(shared, a)
    shared.jobs.crash_after = "finish"
    with pytest.raises(Crash):
        asyncio.run(a.handle(message(last, "m-region-2"), is_region=True))
    asyncio.run(b.handle(message(last, "m-region-2", receive_count=2), is_region=True))
    assert shared.terminal_statuses(JOB) == []
    (again,) = [(body, delay) for body, delay, _ in shared.queue.sent if body == last and delay]
    assert again[1] > LEASE_S  # sent again for when the lease will have expired
    shared.advance(LEASE_S + 1)
    asyncio.run(b.handle(message(last, "m-region-2-again"), is_region=True))
    assert_ended_once(shared, features=8)


def test_a_region_redelivered_after_staging_is_not_run_again() -> None:
    shared, a, b = fleet(width=1300)
    first, last = start(shared, a)
    shared.staging.crash_after_put = True
    with pytest.raises(Crash):
        asyncio.run(b.handle(message(first, "m-region-2"), is_region=True))
    staged_tiles = shared.images.tiles_run
    asyncio.run(a.handle(message(first, "m-region-2", receive_count=2), is_region=True))
    assert shared.images.tiles_run == staged_tiles  # found staged: its tiles did not run again
    asyncio.run(a.handle(message(last, "m-region-3"), is_region=True))
    assert_ended_once(shared, features=shared.images.tiles_run)


def test_a_duplicate_image_message_joins_the_run() -> None:
    shared, a, b = fleet()
    (last,) = start(shared, a)
    # The same message again (SQS delivered it twice): no second run, no second STARTED.
    asyncio.run(b.handle(message(request_body(JOB), "m-image", receive_count=2)))
    bodies = region_bodies(shared)
    assert bodies == [last, last]  # region 2 is not done yet: it is sent again
    for index, body in enumerate(bodies):
        asyncio.run(a.handle(message(body, f"m-region-{index}"), is_region=True))
    started = [e for e in shared.statuses.events if e.status is Status.STARTED]
    assert len(started) == 1
    assert_ended_once(shared, features=8)
    assert json.loads(last)["run"] == 1


def test_an_image_message_looking_again_after_another_ended_it_adds_no_status() -> None:
    # Region 2's worker records FAILED (deadline) and is publishing; the planner, ending its own
    # region at the same moment, finds the lease held and sends its image message to look
    # again. When that copy comes back the status is out: it must not go out twice.
    shared, a, b = fleet()
    (last,) = start(shared, a)
    shared.jobs.crash_after = "finish"  # b dies holding the lease, outcome recorded
    with pytest.raises(Crash):
        asyncio.run(b.handle(message(last, "m-region-2"), is_region=True))
    shared.advance(LEASE_S + 1)
    asyncio.run(b.handle(message(last, "m-region-2", receive_count=2), is_region=True))
    assert shared.terminal_statuses(JOB) == ["SUCCESS"]
    copy = message(request_body(JOB), "m-image-copy")
    asyncio.run(a.handle(dataclasses.replace(copy, submission_id="m-image")))
    assert shared.terminal_statuses(JOB) == ["SUCCESS"]
    assert "m-image-copy" in shared.queue.deleted
