"""Every image ends, every feature once: the finaliser's last steps and the stream's progress.

The service's core on in-memory fakes (tests/service.py), as in test_exactly_once.py, with the
cases where no message brings an image back (its message was settled or dead-lettered while
its finaliser died) and with a Kinesis output (the real KinesisSink on a fake client) whose
finaliser dies between PutRecords calls or whose sibling output keeps failing.
"""

import asyncio
import json

import pytest

from tests.fakes import Crash, FakeKinesis
from tests.service import LEASE_S, FakeImages, MemorySink, Node, Shared, message, request_body
from worker.adapters.sinks import KinesisSink
from worker.contract.status import Status

JOB = "job-1"
URL = "s3://images/a.tif"
KEY = f"{JOB}:{URL}"
OUTPUT = f"{JOB}.geojson"


def fleet(width: int = 900) -> tuple[Shared, Node, Node]:
    shared = Shared(FakeImages(width, 400, [MemorySink("sink-0")]))
    return shared, Node(shared, "worker-a"), Node(shared, "worker-b")


def start(shared: Shared, node: Node) -> list[str]:
    asyncio.run(node.handle(message(request_body(JOB), "m-image")))
    return [body for body, _, _ in shared.queue.sent if '"regionId"' in body]


def die_finalising(shared: Shared, node: Node, last: str) -> None:
    """``node`` takes the last region and dies in its finalisation; the message is lost."""
    with pytest.raises(Crash):
        asyncio.run(node.handle(message(last, "m-region-2"), is_region=True))


def sweep(node: Node) -> int:
    return asyncio.run(node.sweeper.sweep())


def assert_finished_once(shared: Shared, status: str = "SUCCESS") -> None:
    assert shared.jobs.finished == 1
    assert shared.terminal_statuses(JOB) == [status]
    record = shared.jobs.records[KEY]
    assert record.final_status is Status(status)
    assert record.published
    assert not shared.staging.objects
    assert KEY not in shared.jobs.unfinished


@pytest.mark.parametrize("step", ["finish", "mark_published"])
def test_the_sweep_finishes_an_image_whose_finaliser_died_with_no_message_left(
    step: str,
) -> None:
    shared, a, b = fleet()
    (last,) = start(shared, a)
    shared.jobs.crash_after = step  # after the outcome write, or after publishing
    die_finalising(shared, a, last)
    assert sweep(b) == 0  # the lease is live: its holder may still be at work
    assert shared.staging.objects

    shared.advance(LEASE_S + 1)
    assert sweep(b) == 1
    assert_finished_once(shared)
    assert sweep(b) == 0  # nothing left to find: no second status
    assert shared.terminal_statuses(JOB) == ["SUCCESS"]


def test_the_sweep_finalises_a_complete_image_whose_finaliser_died_before_the_outcome() -> None:
    shared, a, b = fleet()
    (last,) = start(shared, a)
    shared.images.sinks[0].crash = "open"
    die_finalising(shared, a, last)
    shared.images.sinks[0].crash = ""
    shared.advance(LEASE_S + 1)
    sweep(b)
    assert_finished_once(shared)
    assert len(shared.images.sinks[0].written[OUTPUT]) == shared.images.tiles_run


def test_two_sweepers_at_once_publish_once() -> None:
    shared, a, b = fleet()
    (last,) = start(shared, a)
    shared.jobs.crash_after = "finish"
    die_finalising(shared, a, last)
    shared.advance(LEASE_S + 1)
    c = Node(shared, "worker-c")

    async def both() -> None:
        await asyncio.gather(b.sweeper.sweep(), c.sweeper.sweep())

    asyncio.run(both())
    assert_finished_once(shared)


def test_the_sweep_leaves_images_in_progress_and_finished_ones_alone() -> None:
    shared, a, b = fleet(width=1300)
    first, last = start(shared, a)
    shared.advance(LEASE_S + 1)
    assert sweep(b) == 0  # regions still running: no lease, not in the index
    asyncio.run(a.handle(message(first, "m-region-2"), is_region=True))
    asyncio.run(b.handle(message(last, "m-region-3"), is_region=True))
    assert_finished_once(shared)
    shared.advance(LEASE_S + 1)
    assert sweep(b) == 0


def test_an_abandoned_message_of_an_unpublished_image_still_ends_it_once() -> None:
    shared, a, b = fleet()
    (last,) = start(shared, a)
    shared.jobs.crash_after = "finish"
    die_finalising(shared, a, last)
    # Redelivered past MODELRUNNER_MAX_RECEIVES: dead-lettered before any work.
    asyncio.run(b.handle(message(last, "m-region-2", receive_count=9), is_region=True))
    assert shared.queue.dead
    shared.advance(LEASE_S + 1)
    sweep(b)
    assert_finished_once(shared)


def with_stream(shared: Shared, request_records: int) -> FakeKinesis:
    kinesis = FakeKinesis()
    sink = KinesisSink(kinesis, "stream", 1, request_records)  # type: ignore[arg-type]
    shared.images.streams.append(sink)
    return kinesis


@pytest.mark.parametrize("puts_before_death", [1, 2, 3])
def test_a_finaliser_dying_between_kinesis_calls_repeats_one_call_at_most(
    puts_before_death: int,
) -> None:
    shared, a, b = fleet(width=1300)
    first, last = start(shared, a)
    asyncio.run(a.handle(message(first, "m-region-2"), is_region=True))
    kinesis = with_stream(shared, request_records=3)
    # The call reaches the stream; the worker dies before it hears back.
    kinesis.crash_after_puts = puts_before_death
    with pytest.raises(Crash):
        asyncio.run(a.handle(message(last, "m-region-3"), is_region=True))
    on_stream = list(kinesis.feature_ids())
    assert len(on_stream) == 3 * puts_before_death

    shared.advance(LEASE_S + 1)
    asyncio.run(b.handle(message(last, "m-region-3", receive_count=2), is_region=True))
    assert_finished_once(shared)
    ids = kinesis.feature_ids()
    assert set(ids) == set(output_ids(shared))  # every feature reached the stream
    assert len(ids) - len(set(ids)) == 3  # the unacknowledged call, and only it, went twice
    acknowledged = 3 * (puts_before_death - 1)
    assert ids[:acknowledged] == on_stream[:acknowledged]


def output_ids(shared: Shared) -> list[str]:
    """The feature ids of the S3 output (a memory sink here), in order."""
    return [json.loads(text)["id"] for text in shared.images.sinks[0].written[OUTPUT]]


def test_a_finaliser_dying_after_recording_progress_repeats_nothing() -> None:
    shared, a, b = fleet()
    (last,) = start(shared, a)
    kinesis = with_stream(shared, request_records=2)
    shared.jobs.crash_after = "advance_output"  # the first call acknowledged and recorded
    die_finalising(shared, a, last)
    shared.advance(LEASE_S + 1)
    asyncio.run(b.handle(message(last, "m-region-2", receive_count=2), is_region=True))
    assert_finished_once(shared)
    ids = kinesis.feature_ids()
    assert ids == output_ids(shared)


def test_an_output_that_keeps_failing_leaves_each_feature_once_on_the_stream() -> None:
    shared, a, _ = fleet(width=400)  # one region: the image request finalises it
    shared.images.sinks[0].failing = True  # a wrong bucket...
    kinesis = with_stream(shared, request_records=500)  # ...and a good stream
    for attempt in (1, 2, 3):  # MODELRUNNER_MAX_ATTEMPTS = 3
        asyncio.run(a.handle(message(request_body(JOB), "m-image", receive_count=attempt)))
    assert shared.terminal_statuses(JOB) == ["FAILED"]
    ids = kinesis.feature_ids()
    assert ids
    assert len(ids) == len(set(ids)) == shared.images.tiles_run // 3
