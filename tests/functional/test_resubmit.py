"""A job submitted again after it ended, a redelivered request, and an image whose every tile
failed: what a user sees on SNS, in S3 and in the job record."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.functional.helpers import TERMINAL, Stack, Status, write_geotiff
from tests.functional.test_cli import modelrunner
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


def send(stack: Stack, request: dict[str, Any], submission_id: str = "") -> str:
    """Send the request as a new SQS message; its MessageId."""
    extra: dict[str, Any] = {}
    if submission_id:  # what the worker adds to a message it sends again itself
        extra["MessageAttributes"] = {
            "modelrunner_submission_id": {"DataType": "String", "StringValue": submission_id}
        }
    reply = stack.sqs.send_message(
        QueueUrl=stack.local.resources.image_queue_url, MessageBody=json.dumps(request), **extra
    )
    return reply["MessageId"]


def output_exists(stack: Stack, job_id: str) -> bool:
    try:
        stack.s3.head_object(Bucket=stack.local.resources.bucket, Key=f"out/{job_id}.geojson")
    except ClientError:
        return False
    return True


def delete_output(stack: Stack, job_id: str) -> None:
    stack.s3.delete_object(Bucket=stack.local.resources.bucket, Key=f"out/{job_id}.geojson")


def of_status(statuses: list[Status], *values: str) -> list[Status]:
    return [s for s in statuses if s.attributes["status"] in values]


def test_resubmitted_job_runs_again_and_a_copy_of_the_request_runs_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    pixels = np.full((1, 600, 600), 150, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "again.tif", pixels, TRANSFORM, UTM))
    request = stack.request(image_url)
    job_id = request["jobId"]

    first_id = send(stack, request)
    statuses = stack.statuses.wait_terminal(job_id)
    assert [s.attributes["status"] for s in of_status(statuses, "STARTED", *TERMINAL)] == [
        "STARTED",
        "SUCCESS",
    ]
    record = stack.job_record(job_id, image_url)
    assert (record["run"], record["submission_id"]) == ("1", first_id)
    delete_output(stack, job_id)

    # The same body as a new message: the job runs again from scratch.
    second_id = send(stack, request)
    statuses = stack.statuses.wait_terminal(job_id, count=2)
    assert [s.attributes["status"] for s in of_status(statuses, "STARTED", *TERMINAL)] == [
        "STARTED",
        "SUCCESS",
        "STARTED",
        "SUCCESS",
    ]
    assert output_exists(stack, job_id), "the second run wrote its output again"
    record = stack.job_record(job_id, image_url)
    assert (record["run"], record["submission_id"]) == ("2", second_id)
    assert record["final_status"] == "SUCCESS"
    assert record["published"] is True
    assert of_status(statuses, *TERMINAL)[-1].attributes["status"] == "SUCCESS"
    delete_output(stack, job_id)

    # A copy of the second submission, as the worker's own re-sends (look again later, wait for
    # capacity) carry it: the same request, so nothing runs, and its status, already out, is
    # not published a third time. (Nor is it on a true SQS redelivery of a message, same
    # message id: tests/worker/test_runs.py.)
    send(stack, request, submission_id=second_id)
    stack.local.wait_for_log(
        "worker", f"job {job_id} image {image_url}: request delivered again after run 2"
    )
    time.sleep(1)  # a status would have gone out with the log line
    statuses = stack.statuses.wait_terminal(job_id, count=2)
    assert len(of_status(statuses, "STARTED")) == 2
    assert len(of_status(statuses, *TERMINAL)) == 2
    assert not output_exists(stack, job_id), "nothing ran again"
    assert stack.job_record(job_id, image_url)["run"] == "2"


def test_every_tile_failing_reports_counts_and_tiles(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 512, 1024), 40, dtype=np.uint8)  # the failure model: HTTP 400
    image_url = stack.upload(write_geotiff(tmp_path / "dark.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url,
        imageProcessorTileOverlap=0,
        imageProcessorParameters={"CustomAttributes": "model_selection=failure"},
    )
    job_id = request["jobId"]
    send(stack, request)
    final = stack.statuses.wait_terminal(job_id)[-1]

    attributes = final.attributes
    assert attributes["status"] == "FAILED"
    assert attributes["failed_tile_count"] == "2"
    assert sorted(json.loads(attributes["failed_tiles"])) == [
        [[0, 0], [512, 512]],
        [[0, 512], [512, 512]],
    ]
    assert int(attributes["processing_duration"]) > 0
    assert "all 2 tiles failed" in final.message
    assert "2 tiles (2 failed)" in final.message
    record = stack.job_record(job_id, image_url)
    assert (record["tile_count"], record["failed_tiles"]) == ("2", "2")
    assert len(record["failed_tile_details"]) == 2
    assert len(record["failed_tile_list"]) == 2
    assert int(record["processing_duration_ms"]) == round(
        float(record["processing_duration"]) * 1000
    )


def test_submit_wait_follows_a_resubmitted_job_to_its_new_end(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 400, 400), 120, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "cli-again.tif", pixels, TRANSFORM, UTM))
    job_id = f"cli-again-{tmp_path.name[-8:]}"
    args = (
        *("submit", "--job-id", job_id, "--image-url", image_url),
        *("--endpoint", stack.local.model_url, "--output-bucket", stack.local.resources.bucket),
        *("--wait", "--timeout", "90"),
    )
    first = modelrunner(stack, *args)
    assert first.returncode == 0, first.stderr
    # Through the status topic, then through the job records (no topic): each waits for the
    # run its own submission started, not the one that ended before it.
    second = modelrunner(stack, *args)
    assert second.returncode == 0, second.stderr
    assert f"{image_url}: SUCCESS" in second.stdout
    assert stack.job_record(job_id, image_url)["run"] == "2"
    third = modelrunner_without_topic(stack, *args)
    assert third.returncode == 0, third.stderr
    assert f"{image_url}: SUCCESS" in third.stdout
    assert stack.job_record(job_id, image_url)["run"] == "3"


def modelrunner_without_topic(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line with no status topic configured: it follows the job records."""
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        env={
            **os.environ,
            **stack.local.worker_environment(),
            "MODELRUNNER_STATUS_TOPIC_ARN": "",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
