"""Region messages delivered more than once give one set of features."""

import json
import re
import time
from typing import Any

import pytest

from tests.functional.distributed.fleet import Fleet, flood_request, settle, summary, terminal
from tests.functional.helpers import Stack

pytestmark = pytest.mark.functional


def test_redelivered_regions_give_one_set_of_features(
    fleet_stack: Stack, fleet: Fleet, image_url: str, clean_result: list[tuple[Any, ...]]
) -> None:
    region_queue = fleet_stack.local.resources.region_queue_url
    request = flood_request(fleet_stack, image_url)
    fleet_stack.submit(json.dumps(request))
    name = fleet.start(MODELRUNNER_MAX_IN_FLIGHT="1")
    # Replace every region message the planner sends by two copies: each region arrives twice.
    copied: set[int] = set()
    deadline = time.monotonic() + 60
    while len(copied) < 11 and time.monotonic() < deadline:
        reply = fleet_stack.sqs.receive_message(
            QueueUrl=region_queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30
        )
        for message in reply.get("Messages", []):
            region_id = json.loads(message["Body"])["regionId"]
            if region_id in copied:  # one of the copies: leave it to the worker
                fleet_stack.sqs.change_message_visibility(
                    QueueUrl=region_queue,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
                continue
            for _ in range(2):
                fleet_stack.sqs.send_message(QueueUrl=region_queue, MessageBody=message["Body"])
            fleet_stack.sqs.delete_message(
                QueueUrl=region_queue, ReceiptHandle=message["ReceiptHandle"]
            )
            copied.add(region_id)
    assert len(copied) == 11

    fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=180)
    assert terminal(settle(fleet_stack, request["jobId"])) == ["SUCCESS"]
    assert summary(fleet_stack.result(request["jobId"])) == clean_result
    log = fleet.log(name)
    job = re.escape(request["jobId"])
    handled = len(re.findall(rf"job {job} image \S+ region \d+/12 done", log))
    handled += len(re.findall(rf"job {job} region \d+: already staged", log))
    handled += len(re.findall(rf"job {job} image \d+ region \d+: image already ended", log))
    assert handled >= 12 + 11
