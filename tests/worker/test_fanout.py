"""The images of a request go to the fleet: each starts on whichever worker takes it.

The service's core on in-memory fakes (tests/service.py), as in test_exactly_once.py.
"""

import asyncio
import json

from tests.service import (
    FakeImages,
    MemorySink,
    Node,
    Shared,
    image_start_bodies,
    message,
    request_body,
)
from worker.contract.status import Status
from worker.errors import ImageUnavailableError

JOB = "job-1"
URLS = [f"s3://images/{name}.tif" for name in "abc"]


def three_images(shared: Shared, node: Node) -> list[str]:
    body = json.dumps({**json.loads(request_body(JOB)), "imageUrls": URLS})
    asyncio.run(node.handle(message(body, "m-image")))
    return image_start_bodies(shared)


def test_the_images_of_a_request_start_on_the_workers_that_take_them() -> None:
    shared = Shared(FakeImages(400, 400, [MemorySink("sink-0")]))  # one region per image
    a, b, c = (Node(shared, f"worker-{name}") for name in "abc")
    starts = three_images(shared, a)

    assert [json.loads(body)["imageIndex"] for body in starts] == [1, 2]
    assert all(json.loads(body)["submissionId"] == "m-image" for body in starts)
    assert shared.images.finalised == 1  # the first image, here; the others wait for the fleet
    asyncio.run(b.handle(message(starts[0], "m-start-1"), is_region=True))
    asyncio.run(c.handle(message(starts[1], "m-start-2"), is_region=True))

    assert shared.terminal_statuses(JOB) == ["SUCCESS"] * 3
    started = [e for e in shared.statuses.events if e.status is Status.STARTED]
    assert len(started) == 3
    written = shared.images.sinks[0].written
    assert sorted(written) == [f"{JOB}_{index}.geojson" for index in range(3)]
    assert {len(features) for features in written.values()} == {4}
    assert set(shared.queue.deleted) == {"m-image", "m-start-1", "m-start-2"}
    assert all(shared.jobs.records[f"{JOB}:{url}"].published for url in URLS)


def test_an_image_start_whose_image_cannot_be_opened_ends_it_failed_once() -> None:
    shared = Shared(FakeImages(400, 400, [MemorySink("sink-0")]))
    a, b = Node(shared, "worker-a"), Node(shared, "worker-b")
    starts = three_images(shared, a)
    shared.images.plan_error = ImageUnavailableError("gone")
    asyncio.run(b.handle(message(starts[0], "m-start-1"), is_region=True))

    record = shared.jobs.records[f"{JOB}:{URLS[1]}"]
    assert record.final_status is Status.FAILED
    assert shared.terminal_statuses(JOB) == ["SUCCESS", "FAILED"]
    assert len(shared.queue.dead) == 1  # the request, in the image DLQ, once for that image
    assert "m-start-1" in shared.queue.deleted
