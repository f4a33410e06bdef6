"""The docker compose stack (infra/docker-compose.yml) runs one job end to end.

Run by ``make test-container`` after infra/container/build.sh has built the images: the stack
starts from them (``--no-build``) with moto's image in place of LocalStack's
(infra/docker-compose.moto.yml; LocalStack's image cannot be pulled here). Skipped (with the
reason) where no engine or no compose plugin answers, failed instead under
``make test-container``. Selected with ``-m docker``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.bootstrap import ResourceNames
from infra.local_stack import SAMPLE_IMAGE
from tests.container.engine import DOCKER, require_engine

pytestmark = [pytest.mark.functional, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = f"modelrunner-test-{uuid.uuid4().hex[:8]}"
COMPOSE = [
    *(DOCKER, "compose", "--project-name", PROJECT),
    *("--file", str(ROOT / "infra" / "docker-compose.yml")),
    *("--file", str(ROOT / "infra" / "docker-compose.moto.yml")),
]
ENDPOINT_URL = "http://127.0.0.1:4566"
START_TIMEOUT_S = 300
JOB_TIMEOUT_S = 180


def compose(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMPOSE, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


@pytest.fixture
def stack() -> Iterator[None]:
    """The compose stack up (from the built images), then down with its network and volumes."""
    require_engine()
    version = compose("version")
    if version.returncode != 0:
        message = f"the docker compose plugin does not answer: {version.stderr}"
        if os.environ.get("MODELRUNNER_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        up = compose("up", "--detach", "--no-build", "--wait", timeout_s=START_TIMEOUT_S)
        assert up.returncode == 0, up.stdout + up.stderr
        yield
    finally:
        print(compose("logs", "--no-color", "--tail", "60", "worker").stdout)  # noqa: T201
        compose("down", "--volumes", "--remove-orphans", timeout_s=300)


def wait_for_status(sqs: Any, queue_url: str, job_id: str) -> str:
    """The first terminal status of ``job_id`` on the status topic's queue."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
        for message in reply.get("Messages", []):
            attributes = json.loads(message["Body"]).get("MessageAttributes", {})
            status = attributes.get("status", {}).get("Value")
            if attributes.get("job_id", {}).get("Value") == job_id and status in {
                "SUCCESS",
                "PARTIAL",
                "FAILED",
            }:
                return str(status)
    raise AssertionError(f"no terminal status for {job_id} in {JOB_TIMEOUT_S}s")


@pytest.mark.timeout(START_TIMEOUT_S + JOB_TIMEOUT_S + 360)
@pytest.mark.usefixtures("stack")
def test_compose_stack_runs_a_job() -> None:
    names = ResourceNames()
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    sqs = session.client("sqs", endpoint_url=ENDPOINT_URL)
    s3 = session.client("s3", endpoint_url=ENDPOINT_URL)
    key = f"images/{uuid.uuid4().hex}/{SAMPLE_IMAGE.name}"
    s3.upload_file(str(SAMPLE_IMAGE), names.image_bucket, key)
    job_id = f"compose-{uuid.uuid4().hex[:12]}"
    request = {
        "jobId": job_id,
        "imageUrls": [f"s3://{names.image_bucket}/{key}"],
        "outputs": [{"type": "S3", "bucket": names.bucket, "prefix": "compose"}],
        "imageProcessor": {"name": "http://model:8080/invocations", "type": "HTTP_ENDPOINT"},
        "imageProcessorTileSize": 512,
        "imageProcessorTileOverlap": 64,
    }
    image_queue = sqs.get_queue_url(QueueName=names.image_queue)["QueueUrl"]
    sqs.send_message(QueueUrl=image_queue, MessageBody=json.dumps(request))

    status_queue = sqs.get_queue_url(QueueName=names.status_queue)["QueueUrl"]
    assert wait_for_status(sqs, status_queue, job_id) == "SUCCESS"
    result = s3.get_object(Bucket=names.bucket, Key=f"compose/{job_id}.geojson")
    features = json.loads(result["Body"].read())["features"]
    assert features
    assert all(f["properties"]["inferenceMetadata"]["jobId"] == job_id for f in features)
