"""A finaliser killed part way: the sweep or a redelivery finishes the job, once.

A proxy in front of the emulator (tests/functional/proxy.py) holds the one call a test aims at,
so a worker is killed exactly there: after the outcome is recorded and before its status goes
out; in the middle of the Kinesis writes, after a PutRecords call reached the stream and before
the worker heard back.
"""

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.functional.distributed.fleet import VISIBILITY_S, Fleet, flood_request, settle, terminal
from tests.functional.helpers import Stack
from tests.functional.proxy import HoldingProxy, Match

pytestmark = pytest.mark.functional


SWEEP_S = 5
REQUEST_RECORDS = 20


@pytest.fixture
def proxy(fleet_stack: Stack) -> Iterator[HoldingProxy]:
    with HoldingProxy(fleet_stack.local.endpoint_url).running() as running:
        yield running


def purge_work_queues(stack: Stack) -> None:
    """No message of any image is left, held or not (as when it was dead-lettered)."""
    resources = stack.local.resources
    for url in (resources.image_queue_url, resources.region_queue_url):
        stack.sqs.purge_queue(QueueUrl=url)


def staged_keys(stack: Stack, job_id: str) -> list[str]:
    reply = stack.s3.list_objects_v2(
        Bucket=stack.local.resources.staging_bucket, Prefix=f"staging/{job_id}/"
    )
    return [o["Key"] for o in reply.get("Contents", [])]


def terminal_publish(stack: Stack, job_id: str) -> Match:
    """The Publish call of the job's terminal status to the image status topic."""
    topic = quote(stack.local.resources.status_topic_arn, safe="").encode()
    status = f"SUCCESS+{job_id}".encode()

    def match(_: str, __: dict[str, str], body: bytes) -> bool:
        return b"Action=Publish" in body and topic in body and status in body

    return match


def test_a_finaliser_killed_before_publishing_with_no_message_left_is_finished_by_the_sweep(
    fleet_stack: Stack, fleet: Fleet, image_url: str, proxy: HoldingProxy
) -> None:
    request = flood_request(fleet_stack, image_url)
    job_id = request["jobId"]
    proxy.hold(terminal_publish(fleet_stack, job_id), forward=False)
    doomed = fleet.start(AWS_ENDPOINT_URL_SNS=proxy.url, MODELRUNNER_SWEEP_INTERVAL_S="60")
    fleet_stack.submit(json.dumps(request))
    assert proxy.held.wait(120), "the terminal status was never sent"
    fleet.kill(doomed)
    killed_at = time.monotonic()
    purge_work_queues(fleet_stack)
    record = fleet_stack.job_record(job_id, image_url)
    assert record["final_status"] == "SUCCESS"
    assert "published" not in record
    assert staged_keys(fleet_stack, job_id)

    survivor = fleet.start(MODELRUNNER_SWEEP_INTERVAL_S=str(SWEEP_S))
    fleet_stack.statuses.wait_terminal(job_id, timeout_s=VISIBILITY_S + 60)
    assert time.monotonic() - killed_at < VISIBILITY_S + 60
    assert terminal(settle(fleet_stack, job_id, quiet_s=VISIBILITY_S + 2 * SWEEP_S)) == ["SUCCESS"]
    record = fleet_stack.job_record(job_id, image_url)
    assert record["published"] is True
    assert "unfinished" not in record
    assert staged_keys(fleet_stack, job_id) == []
    assert f"sweep: job {job_id} image" in fleet.log(survivor)


def is_put_records(path: str, headers: dict[str, str], _: bytes) -> bool:
    target = headers.get("X-Amz-Target", "") + path
    return "PutRecords" in target


def stream_features(stack: Stack, job_id: str) -> list[str]:
    """The ids of the job's features on the stream, in order, duplicates included."""
    return [
        feature["id"]
        for record in stack.kinesis_records(job_id)
        for feature in record["data"]["features"]
    ]


def kinesis_request(stack: Stack, image_url: str) -> dict[str, Any]:
    request = flood_request(stack, image_url)
    stream = stack.local.resources.stream
    request["outputs"].append({"type": "Kinesis", "stream": stream, "batchSize": 1})
    return request


def test_a_finaliser_killed_in_the_middle_of_the_kinesis_writes_repeats_one_call_at_most(
    fleet_stack: Stack, fleet: Fleet, image_url: str, proxy: HoldingProxy
) -> None:
    request = kinesis_request(fleet_stack, image_url)
    job_id = request["jobId"]
    proxy.hold(is_put_records, nth=3)  # the third call reaches the stream, its reply does not
    records = {"MODELRUNNER_KINESIS_REQUEST_RECORDS": str(REQUEST_RECORDS)}
    doomed = fleet.start(AWS_ENDPOINT_URL_KINESIS=proxy.url, **records)
    fleet_stack.submit(json.dumps(request))
    assert proxy.held.wait(120), "the Kinesis writes never got to a third call"
    fleet.kill(doomed)
    on_stream = stream_features(fleet_stack, job_id)
    assert len(on_stream) == 3 * REQUEST_RECORDS

    fleet.start(MODELRUNNER_SWEEP_INTERVAL_S=str(SWEEP_S), **records)
    fleet_stack.statuses.wait_terminal(job_id, timeout_s=VISIBILITY_S + 60)
    assert terminal(settle(fleet_stack, job_id)) == ["SUCCESS"]
    features = [f["id"] for f in fleet_stack.result(job_id)["features"]]
    ids = stream_features(fleet_stack, job_id)
    duplicated = sum(n - 1 for n in Counter(ids).values())
    figures = f"{len(features)} features, {len(ids)} on the stream, {duplicated} twice"
    assert set(ids) == set(features), figures
    assert 0 < duplicated <= REQUEST_RECORDS, figures  # the unacknowledged call, no more
