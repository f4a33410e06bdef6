"""The docker compose stack (infra/docker-compose.yml) runs one job end to end.

Needs a Docker engine with the compose plugin and network access to build the images: skipped
(with the reason) where there is none. Selected with ``-m docker``.
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.bootstrap import ResourceNames
from infra.local_stack import SAMPLE_IMAGE

pytestmark = [pytest.mark.functional, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ["docker", "compose", "-f", str(ROOT / "infra" / "docker-compose.yml")]
ENDPOINT_URL = "http://127.0.0.1:4566"
BUILD_AND_START_TIMEOUT_S = 1200
JOB_TIMEOUT_S = 180


def engine_error() -> str | None:
    """Why no Docker engine answers (None if one does)."""
    docker: Any = pytest.importorskip("docker", reason="the docker SDK is not installed")
    error = None
    with warnings.catch_warnings():
        # docker-py leaves its socket open when the connection fails; close it quietly here.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env()
            try:
                client.ping()
            finally:
                client.close()
        except (docker.errors.DockerException, OSError) as err:
            error = str(err)
        gc.collect()
    return error


def require_engine() -> None:
    """Skip unless the docker SDK is installed and an engine and the compose plugin answer."""
    error = engine_error()
    if error is not None:
        pytest.skip(f"no Docker engine answers: {error}")
    if shutil.which("docker") is None:
        pytest.skip("no docker command")
    version = subprocess.run([*COMPOSE[:2], "version"], capture_output=True, check=False)
    if version.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")


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


@pytest.mark.timeout(BUILD_AND_START_TIMEOUT_S + JOB_TIMEOUT_S + 120)
def test_compose_stack_runs_a_job() -> None:
    require_engine()
    try:
        subprocess.run(
            [*COMPOSE, "up", "-d", "--build"], check=True, timeout=BUILD_AND_START_TIMEOUT_S
        )
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
        assert json.loads(result["Body"].read())["features"]
    finally:
        subprocess.run([*COMPOSE, "logs", "--no-color", "worker"], check=False, timeout=60)
        subprocess.run([*COMPOSE, "down", "-v", "--remove-orphans"], check=False, timeout=300)
