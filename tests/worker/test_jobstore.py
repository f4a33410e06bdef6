"""The record rules of DynamoJobStore and the submission id of SqsQueue, against a real
(in-process) moto server on 127.0.0.1."""

import asyncio
import dataclasses
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

from tiling.grid import Window
from worker.adapters.dynamodb import DynamoJobStore
from worker.adapters.sqs import SqsQueue
from worker.contract.records import FailedTile, ImageOutcome, RunPlan
from worker.contract.status import Status

T = TypeVar("T")
URL = "s3://images/a.tif"
TABLE = "jobs"
UNFINISHED_INDEX: Any = {  # as infra/bootstrap.py makes it
    "IndexName": "unfinished-index",
    "KeySchema": [
        {"AttributeName": "unfinished", "KeyType": "HASH"},
        {"AttributeName": "lease_until", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["job_id", "image_url"]},
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@asynccontextmanager
async def client(endpoint: str, service: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as made:
        yield made


def with_store(endpoint: str, test: Callable[[DynamoJobStore], Awaitable[T]]) -> T:
    async def run() -> T:
        async with client(endpoint, "dynamodb") as dynamodb:
            tables = await dynamodb.list_tables()
            if TABLE not in tables["TableNames"]:
                await dynamodb.create_table(
                    TableName=TABLE,
                    AttributeDefinitions=[
                        {"AttributeName": "image_id", "AttributeType": "S"},
                        {"AttributeName": "unfinished", "AttributeType": "S"},
                        {"AttributeName": "lease_until", "AttributeType": "N"},
                    ],
                    KeySchema=[{"AttributeName": "image_id", "KeyType": "HASH"}],
                    GlobalSecondaryIndexes=[UNFINISHED_INDEX],
                    BillingMode="PAY_PER_REQUEST",
                )
            return await test(DynamoJobStore(dynamodb, TABLE, ttl_days=1))

    return asyncio.run(run())


def plan(submission_id: str, region_count: int = 3) -> RunPlan:
    return RunPlan("name", region_count, 12, 600.0, submission_id=submission_id)


async def end(store: DynamoJobStore, job: str, outcome: ImageOutcome | None = None) -> None:
    assert await store.claim(job, URL, "worker-a", 60)
    assert await store.finish(job, URL, "worker-a", outcome or ImageOutcome(Status.SUCCESS, 12))
    record = await store.get(job, URL)
    assert record is not None
    await store.mark_published(job, URL, record.run)


def test_redelivery_returns_the_ended_run_and_a_new_submission_starts_the_next(
    endpoint: str,
) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"

    async def test(store: DynamoJobStore) -> None:
        first = await store.open_image(job, URL, plan("m-1"))
        assert (first.created, first.run, first.submission_id) == (True, 1, "m-1")
        await store.region_done(job, URL, 1, run=1)
        await end(store, job)

        again = await store.open_image(job, URL, plan("m-1"))
        assert (again.created, again.run, again.final_status) == (False, 1, Status.SUCCESS)
        assert again.published

        second = await store.open_image(job, URL, plan("m-2", region_count=2))
        assert (second.created, second.run, second.submission_id) == (True, 2, "m-2")
        stored = await store.get(job, URL)
        assert stored is not None
        assert stored.final_status is None
        assert not stored.published
        assert stored.regions_done == frozenset()
        assert stored.region_count == 2
        assert stored.start_time >= first.start_time
        # The lease went with the old run: another worker may finalise the new one.
        assert await store.claim(job, URL, "worker-b", 60)

    with_store(endpoint, test)


def test_a_run_in_progress_is_joined_not_restarted(endpoint: str) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"

    async def test(store: DynamoJobStore) -> None:
        await store.open_image(job, URL, plan("m-1"))
        await store.region_done(job, URL, 2, run=1)
        joined = await store.open_image(job, URL, plan("m-2"))
        assert (joined.created, joined.run, joined.submission_id) == (False, 1, "m-1")
        assert joined.regions_done == frozenset({2})

    with_store(endpoint, test)


@pytest.mark.parametrize("same", [True, False])
def test_concurrent_new_submissions_restart_the_image_once(endpoint: str, same: bool) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"

    async def test(store: DynamoJobStore) -> None:
        await store.open_image(job, URL, plan("m-1"))
        await end(store, job)
        ids = ["m-2", "m-2"] if same else ["m-2", "m-3"]
        opened = await asyncio.gather(*(store.open_image(job, URL, plan(i)) for i in ids * 2))
        assert sum(r.created for r in opened) == 1
        assert {r.run for r in opened} == {2}
        stored = await store.get(job, URL)
        assert stored is not None
        assert stored.run == 2

    with_store(endpoint, test)


def test_regions_and_publication_of_an_earlier_run_are_refused(endpoint: str) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"

    async def test(store: DynamoJobStore) -> None:
        await store.open_image(job, URL, plan("m-1"))
        await end(store, job)
        await store.open_image(job, URL, plan("m-2"))
        assert await store.region_done(job, URL, 1, run=1) is None
        await store.mark_published(job, URL, run=1)
        stored = await store.get(job, URL)
        assert stored is not None
        assert stored.regions_done == frozenset()
        assert not stored.published
        done = await store.region_done(job, URL, 1, run=2)
        assert done is not None
        assert done.regions_done == frozenset({1})

    with_store(endpoint, test)


def test_outcome_fields_round_trip(endpoint: str) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    failures = tuple(
        FailedTile(Window(i * 448, 0, 512, 512), f"HTTP 500 number {i}") for i in range(120)
    )
    outcome = ImageOutcome(
        Status.FAILED,
        tile_count=120,
        failed_tiles=120,
        duration_s=3.21,
        reason="all 120 tiles failed",
        failed_tile_list=failures,
    )

    async def test(store: DynamoJobStore) -> dict[str, Any]:
        await store.open_image(job, URL, plan("m-1"))
        await end(store, job, outcome)
        record = await store.get(job, URL)
        assert record is not None
        assert record.outcome() == dataclasses.replace(outcome, failed_tile_list=failures[:100])
        reply = await store._client.get_item(
            TableName=TABLE, Key={"image_id": {"S": f"{job}:{URL}"}}
        )
        return dict(reply["Item"])

    item = with_store(endpoint, test)
    assert item["processing_duration"] == {"N": "3.21"}
    assert item["processing_duration_ms"] == {"N": "3210"}
    assert item["tile_count"] == {"N": "120"}
    assert item["failed_tiles"] == {"N": "120"}
    assert item["failed_tile_list"]["L"][1] == {"S": "0,448 512x512: HTTP 500 number 1"}
    assert item["failed_tile_details"]["L"][1] == {
        "M": {
            "row": {"N": "0"},
            "col": {"N": "448"},
            "width": {"N": "512"},
            "height": {"N": "512"},
            "reason": {"S": "HTTP 500 number 1"},
        }
    }
    assert item["run"] == {"N": "1"}
    assert item["submission_id"] == {"S": "m-1"}


def test_a_message_sent_again_keeps_its_submission_id(endpoint: str) -> None:
    async def run() -> list[tuple[str, str]]:
        async with client(endpoint, "sqs") as sqs:
            name = f"q-{uuid.uuid4().hex[:8]}"
            url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
            queue = SqsQueue(sqs, url, url)
            await queue.send("first")
            (first,) = await queue.receive(1, 1, 30)
            await queue.send(first.body, 0, first.submission_id)
            await queue.delete(first)
            (again,) = await queue.receive(1, 1, 30)
            return [
                (first.message_id, first.submission_id),
                (again.message_id, again.submission_id),
            ]

    (first_id, first_submission), (again_id, again_submission) = asyncio.run(run())
    assert first_submission == first_id
    assert again_id != first_id
    assert again_submission == first_id


def test_the_unfinished_index_holds_claimed_images_until_they_are_cleaned_up(
    endpoint: str,
) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"

    async def stalled(store: DynamoJobStore, after_s: float) -> bool:
        return (job, URL) in await store.stalled(time.time() + after_s)

    async def test(store: DynamoJobStore) -> None:
        body = json.dumps({"jobId": job})
        plan_ = dataclasses.replace(plan("m-1"), request_body=body, image_index=2)
        opened = await store.open_image(job, URL, plan_)
        assert (opened.request_body, opened.image_index) == (body, 2)
        assert not await stalled(store, 120)  # not claimed: its regions are running
        assert await store.claim(job, URL, "worker-a", 60)
        assert not await stalled(store, 0)  # the lease is live
        assert await stalled(store, 120)  # the lease will have expired

        assert await store.advance_output(job, URL, "worker-a", "kinesis:s", 500)
        assert not await store.advance_output(job, URL, "worker-b", "kinesis:s", 600)
        record = await store.get(job, URL)
        assert record is not None
        assert record.output_progress == {"kinesis:s": 500}

        assert await store.finish(job, URL, "worker-a", ImageOutcome(Status.SUCCESS, 12))
        assert not await store.advance_output(job, URL, "worker-a", "kinesis:s", 700)
        await store.mark_published(job, URL, 1)
        assert await stalled(store, 120)  # published, its staged regions not yet deleted
        await store.mark_cleaned(job, URL, 1)
        assert not await stalled(store, 120)

    with_store(endpoint, test)
