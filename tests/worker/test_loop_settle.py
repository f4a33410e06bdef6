"""How a message is settled when its image is being finalised by another worker, and when
its handling meets a bug."""

import asyncio
import json

import pytest

from tests.fakes import RecordingPublisher, RecordingQueue
from tests.service import HANDLING
from worker.contract.regions import RegionRequest
from worker.errors import FinalisingElsewhere
from worker.handlers import ImageHandler, RegionHandler
from worker.images import ImageRef
from worker.ports import QueueMessage
from worker.settling import Settler, Work

REQUEST = {
    "jobId": "job-1",
    "imageUrls": ["s3://images/a.tif"],
    "outputs": [{"type": "S3", "bucket": "results", "prefix": "out"}],
    "imageProcessor": {"name": "http://127.0.0.1:8080/invocations", "type": "HTTP_ENDPOINT"},
}


class Busy:
    """A service whose images are always being finalised by someone else."""

    async def run_region(self, region: RegionRequest, ref: ImageRef) -> None:
        raise FinalisingElsewhere(region.job_id, ref.url, 300.0)

    async def give_up_region(self, region: RegionRequest, ref: ImageRef, reason: str) -> None:
        raise AssertionError("a region being finalised elsewhere is not given up")

    async def start_image(self, ref: ImageRef, submission_id: str = "") -> None:
        raise FinalisingElsewhere(ref.job_id, ref.url, 300.0)

    async def fail(self, ref: ImageRef, reason: str, submission_id: str = "") -> None:
        raise AssertionError("an image being finalised elsewhere is not failed")


def settle(
    body: str, is_region: bool, receive_count: int = 3
) -> tuple[RecordingQueue, RecordingPublisher]:
    queue, statuses = RecordingQueue(), RecordingPublisher()
    busy = Busy()
    settler = Settler(HANDLING, statuses)
    handler = (
        RegionHandler(settler, busy) if is_region else ImageHandler(settler, (busy, busy), statuses)
    )
    message = QueueMessage("m-1", "r-1", body, receive_count)
    asyncio.run(handler.handle(Work(queue, message, is_region)))
    return queue, statuses


def test_region_is_sent_again_for_after_the_lease_not_dropped() -> None:
    region = RegionRequest(
        job_id="job-1",
        image_index=0,
        region_id=2,
        region_count=4,
        region_size_px=1024,
        tile_count=4,
        region_bounds=(0, 0, 1024, 1024),
        image_request=json.dumps(REQUEST),
    )
    queue, statuses = settle(region.body(), is_region=True)
    # A fresh copy (the receive count starts over) of the same submission.
    assert queue.sent == [(region.body(), 301, "m-1")]
    assert queue.deleted == ["m-1"]
    assert not queue.dead
    # Waiting is not a status change; that the region is run again (3rd receive) is said.
    assert [e.description for e in statuses.events] == [
        "region 2 of image s3://images/a.tif is run again (received 3 times: its last worker"
        " stopped or failed)"
    ]


def test_image_message_is_sent_again_too() -> None:
    body = json.dumps(REQUEST)
    queue, _ = settle(body, is_region=False)
    assert queue.sent == [(body, 301, "m-1")]
    assert queue.deleted == ["m-1"]
    assert not queue.dead


class Broken(Busy):
    """A service with a bug: starting an image raises an error no port declares."""

    async def start_image(self, ref: ImageRef, submission_id: str = "") -> None:
        raise ZeroDivisionError("division by zero")


def test_a_bug_reaches_the_loop_and_the_message_is_left_for_redelivery() -> None:
    queue, statuses = RecordingQueue(), RecordingPublisher()
    broken = Broken()
    handler = ImageHandler(Settler(HANDLING, statuses), (broken, broken), statuses)
    message = QueueMessage("m-1", "r-1", json.dumps(REQUEST), 1)
    with pytest.raises(ZeroDivisionError):
        asyncio.run(handler.handle(Work(queue, message, False)))
    # Not deleted, not dead-lettered, not re-sent: it comes back after its visibility timeout
    # and is given up after MODELRUNNER_MAX_RECEIVES receipts.
    assert (queue.deleted, queue.dead, queue.sent) == ([], [], [])
