"""Runs of an image: redelivered requests, new submissions, stale regions, counts of failures.

The coordinator and the loop on in-memory fakes (tests/fakes.py); no image is opened unless
the test says so.
"""

import asyncio
import dataclasses
import json
import time

import pytest

from postprocessing.table import DetectionTable
from tests.service import FakeImages, MemorySink, Node, Shared
from tiling.grid import Window
from worker.contract.parsing import parse_image_request
from worker.contract.records import FailedTile, ImageRecord
from worker.contract.regions import RegionRequest
from worker.contract.status import Status
from worker.errors import ImageUnavailableError
from worker.images import ImageRef
from worker.ports import QueueMessage
from worker.staging import StagedRegion

JOB = "job-1"
URL = "s3://images/a.tif"
BODY = json.dumps(
    {
        "jobId": JOB,
        "imageUrls": [URL],
        "outputs": [{"type": "S3", "bucket": "results", "prefix": "out"}],
        "imageProcessor": {"name": "http://127.0.0.1:8080/invocations", "type": "HTTP_ENDPOINT"},
    }
)


MUST_NOT_PLAN = AssertionError("must not plan")


class Harness:
    """One worker on fakes (tests/service.py); planning fails with ``AssertionError`` unless a
    test says otherwise."""

    def __init__(self, plan_error: Exception | None = MUST_NOT_PLAN) -> None:
        self.shared = Shared(FakeImages(1024, 1024, [MemorySink("s3")]))
        self.shared.images.plan_error = plan_error
        self.node = Node(self.shared, "worker-a")
        self.jobs = self.shared.jobs
        self.staging = self.shared.staging
        self.statuses = self.shared.statuses
        self.queue = self.shared.queue
        self.pipeline = self.shared.images

    def handle(self, message: QueueMessage, is_region: bool = False) -> None:
        asyncio.run(self.node.handle(message, is_region))


def ended(submission_id: str, published: bool, run: int = 1) -> ImageRecord:
    now = time.time()
    return ImageRecord(
        region_count=1,
        tile_count=4,
        start_time=now - 10,
        deadline=now + 100,
        regions_done=frozenset({1}),
        final_status=Status.PARTIAL,
        published=published,
        failed_tiles=1,
        feature_count=3,
        duration_s=2.5,
        failed_tile_list=(FailedTile(Window(512, 0, 512, 512), "HTTP 500"),),
        run=run,
        submission_id=submission_id,
    )


@pytest.mark.parametrize("published", [True, False])
def test_redelivered_request_runs_nothing_and_publishes_only_a_status_not_yet_out(
    published: bool,
) -> None:
    # Its receiver died after the run ended (or let it go): one terminal status, never two.
    harness = Harness()
    harness.jobs.put(JOB, URL, ended("m-1", published))
    harness.handle(QueueMessage("m-1", "r-2", BODY, receive_count=2))

    assert harness.pipeline.planned == 0
    assert harness.queue.deleted == ["m-1"]
    if published:
        assert harness.statuses.events == []
        return
    (event,) = harness.statuses.events
    assert event.status is Status.PARTIAL
    assert event.sns_attributes() == {
        "status": "PARTIAL",
        "job_id": JOB,
        "image_status": "PARTIAL",
        "image_id": f"{JOB}:{URL}",
        "processing_duration": "2500",
        "failed_tiles": "[[[0,512],[512,512]]]",
        "failed_tile_count": "1",
    }
    assert harness.queue.deleted == ["m-1"]
    assert not harness.queue.dead
    record = harness.jobs.records[f"{JOB}:{URL}"]
    assert record.published
    assert record.run == 1


@pytest.mark.parametrize("published", [True, False])
def test_a_message_sent_again_by_the_worker_is_the_same_submission(published: bool) -> None:
    # A copy the worker sent itself to look again later: the same request (nothing runs), and
    # the recorded status goes out only if it has not yet (never a second terminal status).
    harness = Harness()
    harness.jobs.put(JOB, URL, ended("m-1", published=published))
    harness.handle(QueueMessage("m-7", "r-7", BODY, receive_count=1, submission_id="m-1"))
    assert harness.pipeline.planned == 0
    sent = [e.status for e in harness.statuses.events]
    assert sent == ([] if published else [Status.PARTIAL])
    assert harness.queue.deleted == ["m-7"]
    assert harness.jobs.records[f"{JOB}:{URL}"].published


def test_new_submission_of_an_ended_job_runs_again_and_ends_with_its_own_status() -> None:
    # The image is gone since the first run: the new run ends FAILED, with a status.
    harness = Harness(ImageUnavailableError("cannot open s3://images/a.tif"))
    harness.jobs.put(JOB, URL, ended("m-1", published=True))
    harness.handle(QueueMessage("m-2", "r-2", BODY, receive_count=1))

    assert harness.pipeline.planned == 1
    (event,) = harness.statuses.events
    assert event.status is Status.FAILED
    assert "cannot open s3://images/a.tif" in event.description
    record = harness.jobs.records[f"{JOB}:{URL}"]
    assert (record.run, record.submission_id, record.final_status) == (2, "m-2", Status.FAILED)
    assert record.published
    assert record.regions_done == frozenset()
    assert harness.queue.dead  # a request whose image failed in planning is dead-lettered


def test_message_ids_default_to_the_submission() -> None:
    assert QueueMessage("m-1", "r", "{}", 1).submission_id == "m-1"
    assert QueueMessage("m-2", "r", "{}", 1, submission_id="m-1").submission_id == "m-1"


def region(run: int, region_id: int = 2, tile_count: int = 4) -> RegionRequest:
    return RegionRequest(
        job_id=JOB,
        image_index=0,
        region_id=region_id,
        region_count=2,
        region_size_px=1024,
        tile_count=tile_count,
        region_bounds=(0, 1024, 1024, 1024),
        image_request=BODY,
        run=run,
    )


def in_progress(run: int, tile_count: int = 8) -> ImageRecord:
    now = time.time()
    return ImageRecord(
        region_count=2, tile_count=tile_count, start_time=now, deadline=now + 100, run=run
    )


def test_region_of_an_earlier_run_is_acknowledged_and_ignored() -> None:
    harness = Harness()
    harness.jobs.put(JOB, URL, in_progress(run=2))
    harness.handle(QueueMessage("m-r", "r-r", region(run=1).body(), 1), is_region=True)
    assert harness.queue.deleted == ["m-r"]
    assert harness.pipeline.planned == 0
    assert not harness.statuses.events
    assert not harness.staging.objects
    assert harness.jobs.records[f"{JOB}:{URL}"].regions_done == frozenset()


def test_region_messages_without_a_run_are_of_the_first() -> None:
    body = json.loads(region(run=1).body())
    del body["run"]
    assert RegionRequest.model_validate_json(json.dumps(body)).run == 1


def test_given_up_region_of_an_earlier_run_is_not_counted() -> None:
    harness = Harness()
    harness.jobs.put(JOB, URL, in_progress(run=3))
    ref = ImageRef(parse_image_request(BODY), 0)
    asyncio.run(harness.node.runner.give_up_region(region(run=2), ref, "endpoint gone"))
    assert not harness.staging.objects
    assert harness.jobs.records[f"{JOB}:{URL}"].regions_done == frozenset()


def test_every_tile_failing_fails_the_image_with_the_counts_and_tiles() -> None:
    """Region 1's four tiles failed; region 2 is given up: FAILED with 8 of 8 failed."""
    harness = Harness(None)
    harness.jobs.put(JOB, URL, dataclasses.replace(in_progress(run=1), regions_done=frozenset({1})))
    failures = tuple(
        FailedTile(Window(col, row, 512, 512), "HTTP 500") for row in (0, 512) for col in (0, 512)
    )
    harness.staging.objects[(JOB, 0, 1, 1)] = StagedRegion(
        table=DetectionTable(),
        tile_count=4,
        failed_tiles=failures,
    )
    ref = ImageRef(parse_image_request(BODY), 0)
    asyncio.run(harness.node.runner.give_up_region(region(run=1), ref, "endpoint gone"))

    (event,) = harness.statuses.events
    attributes = event.sns_attributes()
    assert attributes["status"] == "FAILED"
    assert attributes["failed_tile_count"] == "8"
    listed = json.loads(attributes["failed_tiles"])
    assert listed[:4] == [[[row, col], [512, 512]] for row in (0, 512) for col in (0, 512)]
    assert listed[4] == [[1024, 0], [1024, 1024]]  # the given-up region, as one entry
    assert "all 8 tiles failed" in event.description
    assert "8 tiles (8 failed)" in event.description
    final = harness.jobs.records[f"{JOB}:{URL}"]
    assert (final.tile_count, final.failed_tiles, len(final.failed_tile_list)) == (8, 8, 5)
    assert any("all 8 tiles failed" in reason for reason in harness.queue.dead)


def test_failing_an_image_in_progress_counts_its_tiles() -> None:
    harness = Harness()
    harness.jobs.put(JOB, URL, in_progress(run=1, tile_count=9))
    ref = ImageRef(parse_image_request(BODY), 0)
    asyncio.run(harness.node.finaliser.fail(ref, "job deadline exceeded", "m-1"))
    (event,) = harness.statuses.events
    assert event.sns_attributes()["failed_tile_count"] == "9"
    assert event.sns_attributes()["failed_tiles"] == "[]"
    assert harness.jobs.records[f"{JOB}:{URL}"].tile_count == 9
