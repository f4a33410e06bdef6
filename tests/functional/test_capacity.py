"""Capacity-based throttling: a job that does not fit next to another waits, then runs."""

import json
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from tests.functional.helpers import Stack, own_worker, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


def test_job_waits_for_http_endpoint_capacity_then_runs(stack: Stack, tmp_path: Path) -> None:
    processor = {"name": stack.local.model_url, "type": "HTTP_ENDPOINT"}
    waiting = two_jobs_on_one_endpoint(stack, tmp_path, processor, "")
    assert f"endpoint {stack.local.model_url}: load 4 + 4 of capacity 4" in waiting


def test_job_waits_for_sagemaker_endpoint_capacity_then_runs(stack: Stack, tmp_path: Path) -> None:
    # Capacity from moto's control plane: 2 instances x the endpoint's concurrency tag 3.
    sagemaker = boto3.session.Session(region_name="us-east-1").client(
        "sagemaker", endpoint_url=stack.local.endpoint_url
    )
    name = f"capacity-sm-{uuid.uuid4().hex[:8]}"
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
        PrimaryContainer={"Image": "centerpoint"},
    )
    variant = {
        "VariantName": "main",
        "ModelName": name,
        "InitialInstanceCount": 2,
        "InstanceType": "ml.g4dn.xlarge",
    }
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sagemaker.create_endpoint(
        EndpointName=name,
        EndpointConfigName=name,
        Tags=[{"Key": "osml:instance-concurrency", "Value": "3"}],
    )
    processor = {"name": name, "type": "SM_ENDPOINT"}
    waiting = two_jobs_on_one_endpoint(stack, tmp_path, processor, "model_selection=centerpoint")
    assert f"endpoint {name}: load 4 + 4 of capacity 6" in waiting


def two_jobs_on_one_endpoint(
    stack: Stack, tmp_path: Path, processor: dict[str, str], attributes: str
) -> str:
    """Run a slow job, then a quick one on the same endpoint; the quick one's waiting status."""
    # Capacity 4, and each job adds 4 (one worker's endpoint concurrency): one job at a time.
    worker, queues = own_worker(
        stack,
        "capacity",
        MODELRUNNER_HTTP_ENDPOINT_CAPACITY="4",
        MODELRUNNER_ENDPOINT_CONCURRENCY="4",
        MODELRUNNER_CAPACITY_RETRY_S="1",
    )

    def submit(request: dict[str, Any]) -> None:
        stack.sqs.send_message(
            QueueUrl=queues["MODELRUNNER_IMAGE_QUEUE"], MessageBody=json.dumps(request)
        )

    try:
        slow_url = stack.upload(
            write_geotiff(
                tmp_path / "slow.tif", np.full((1, 1024, 1024), 90, np.uint8), TRANSFORM, UTM
            )
        )
        slow = stack.request(
            slow_url,
            imageProcessor=processor,
            imageProcessorTileSize=256,
            imageProcessorTileOverlap=0,  # 16 tiles, 4 at a time, 0.4 s each: about 2 s
            imageProcessorParameters={"CustomAttributes": f"{attributes},sleep_ms=400"},
        )
        quick_url = stack.upload(
            write_geotiff(
                tmp_path / "quick.tif", np.full((1, 256, 256), 90, np.uint8), TRANSFORM, UTM
            )
        )
        quick = stack.request(
            quick_url,
            imageProcessor=processor,
            imageProcessorTileSize=256,
            imageProcessorTileOverlap=0,
            imageProcessorParameters={"CustomAttributes": attributes or "sleep_ms=0"},
        )
        submit(slow)
        deadline = time.monotonic() + 60
        while not stack.statuses.by_job.get(slow["jobId"]):  # the slow job has started
            assert time.monotonic() < deadline, "the first job never started"
            stack.statuses._drain()
        submit(quick)
        quick_statuses = stack.statuses.wait_terminal(quick["jobId"])
        slow_statuses = stack.statuses.wait_terminal(slow["jobId"])
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert slow_statuses[-1].attributes["status"] == "SUCCESS"
    assert quick_statuses[-1].attributes["status"] == "SUCCESS"
    waiting = [s.message for s in quick_statuses if "waiting for endpoint capacity" in s.message]
    assert waiting, [s.message for s in quick_statuses]
    # The quick job started only once the slow one had ended (and released its capacity).
    slow_record = stack.job_record(slow["jobId"], slow_url)
    quick_record = stack.job_record(quick["jobId"], quick_url)
    assert float(quick_record["start_time"]) >= float(slow_record["end_time"])
    assert "active_endpoint" not in slow_record
    assert "active_endpoint" not in quick_record
    assert len(stack.result(quick["jobId"])["features"]) == 1
    # Waiting is not failing: nothing reached the DLQ, and the message was received afresh.
    dlq = stack.sqs.receive_message(QueueUrl=queues["MODELRUNNER_IMAGE_DLQ"], WaitTimeSeconds=0)
    assert not dlq.get("Messages")
    return waiting[0]
