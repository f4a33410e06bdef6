"""Capacity-based throttling: a job that does not fit next to another waits, then runs."""

import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.functional.helpers import Stack, own_queues, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


def test_job_waits_for_endpoint_capacity_then_runs(stack: Stack, tmp_path: Path) -> None:
    name = f"capacity-{uuid.uuid4().hex[:8]}"
    queues = own_queues(stack.sqs, name)
    # Capacity 4, and each job adds 4 (one worker's endpoint concurrency): one job at a time.
    worker = stack.local.start_worker(
        f"worker-{name}",
        MODELRUNNER_HTTP_ENDPOINT_CAPACITY="4",
        MODELRUNNER_ENDPOINT_CONCURRENCY="4",
        MODELRUNNER_CAPACITY_RETRY_S="1",
        **queues,
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
            imageProcessorTileSize=256,
            imageProcessorTileOverlap=0,
            imageProcessorParameters={"CustomAttributes": "sleep_ms=400"},  # 16 tiles, ~2 s
        )
        quick_url = stack.upload(
            write_geotiff(
                tmp_path / "quick.tif", np.full((1, 256, 256), 90, np.uint8), TRANSFORM, UTM
            )
        )
        quick = stack.request(quick_url, imageProcessorTileSize=256, imageProcessorTileOverlap=0)
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
    assert f"endpoint {stack.local.model_url}: load 4 + 4 of capacity 4" in waiting[0]
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
