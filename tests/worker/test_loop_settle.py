"""How a message is settled when its image is being finalised by another worker."""

import asyncio
import json
from typing import Any

from tests.service import HANDLING
from worker.contract.regions import RegionRequest
from worker.contract.status import StatusEvent
from worker.errors import FinalisingElsewhere
from worker.handlers import ImageHandler, RegionHandler, Settler, Work
from worker.images import ImageRef
from worker.ports import QueueMessage

REQUEST = {
    "jobId": "job-1",
    "imageUrls": ["s3://images/a.tif"],
    "outputs": [{"type": "S3", "bucket": "results", "prefix": "out"}],
    "imageProcessor": {"name": "http://127.0.0.1:8080/invocations", "type": "HTTP_ENDPOINT"},
}


class Queue:
    """Records what the loop does to its messages."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.submissions: list[str] = []
        self.deleted: list[str] = []
        self.dead: list[str] = []
        self.visibility: list[int] = []

    async def receive(self, max_messages: int, wait_s: int, visibility_s: int) -> list[Any]:
        return []

    async def delete(self, message: QueueMessage) -> None:
        self.deleted.append(message.message_id)

    async def set_visibility(self, message: QueueMessage, timeout_s: int) -> None:
        self.visibility.append(timeout_s)

    async def send(self, body: str, delay_s: int = 0, submission_id: str = "") -> None:
        self.sent.append((body, delay_s))
        self.submissions.append(submission_id)

    async def dead_letter(self, message: QueueMessage, reason: str) -> None:
        self.dead.append(reason)


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


class Statuses:
    def __init__(self) -> None:
        self.events: list[StatusEvent] = []

    async def publish(self, event: StatusEvent) -> None:
        self.events.append(event)


def settle(body: str, is_region: bool, receive_count: int = 3) -> tuple[Queue, Statuses]:
    queue, statuses = Queue(), Statuses()
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
    assert queue.sent == [(region.body(), 301)]  # a fresh copy: the receive count starts over
    assert queue.submissions == ["m-1"]  # ... of the same submission
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
    assert queue.sent == [(body, 301)]
    assert queue.submissions == ["m-1"]
    assert queue.deleted == ["m-1"]
    assert not queue.dead
