"""The worker image run as production runs it, against the emulator on the host network.

moto, the synthetic model server and the SageMaker router run on 127.0.0.1 (infra.local_stack);
each worker container gets its own queues, runs as uid 10001 on a read-only root file system
with a /tmp tmpfs (as infra/k8s/deployment.yaml sets it) and uses the host network.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import numpy as np
import pytest
from affine import Affine
from mypy_boto3_s3.client import S3Client
from mypy_boto3_sqs.client import SQSClient
from pyproj import Transformer
from rasterio.crs import CRS

from infra.local_stack import LocalStack
from tests.container.engine import (
    WORKER,
    docker,
    image_config,
    inspect,
    logs,
    remove,
    wait_for_health,
)
from tests.functional.helpers import StatusLog, own_queues, write_geotiff

pytestmark = [pytest.mark.docker, pytest.mark.functional]

UTM = CRS.from_epsg(32618)
TRANSFORM = Affine(0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0)
WIDTH, HEIGHT, TILE, OVERLAP = 1500, 1100, 512, 64
GRACE_PERIOD_S = 3
# Health checks every second; the loop counts as stuck when its file is 3 s old.
FAST_HEALTH = [
    *("--health-interval", "1s", "--health-timeout", "5s"),
    *("--health-retries", "2", "--health-start-period", "1s"),
]


@dataclass
class Emulator:
    """The local stack on the host and clients of it."""

    local: LocalStack
    sqs: SQSClient
    s3: S3Client
    statuses: StatusLog
    image_url: str


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log_dir = tmp_path_factory.mktemp("container-stack")
    with LocalStack(log_dir) as local:
        session = boto3.session.Session(region_name="us-east-1")
        sqs = session.client("sqs", endpoint_url=local.endpoint_url)
        s3 = session.client("s3", endpoint_url=local.endpoint_url)
        pixels = np.random.default_rng(1).integers(100, 255, (3, HEIGHT, WIDTH), dtype=np.uint8)
        path = write_geotiff(log_dir / "utm.tif", pixels, TRANSFORM, UTM)
        key = f"images/{uuid.uuid4().hex}/utm.tif"
        s3.upload_file(str(path), local.resources.image_bucket, key)
        yield Emulator(
            local=local,
            sqs=sqs,
            s3=s3,
            statuses=StatusLog(sqs, local.resources.status_queue_url),
            image_url=f"s3://{local.resources.image_bucket}/{key}",
        )


@dataclass
class Worker:
    """A worker container and the image queue it polls."""

    name: str
    image_queue_url: str


def start_worker(
    emulator: Emulator, queues: dict[str, str], *docker_args: str, **overrides: str
) -> Worker:
    """Run the worker image detached, as the Kubernetes manifest runs it."""
    image_config(WORKER)
    name = f"modelrunner-test-{uuid.uuid4().hex[:8]}"
    environment = emulator.local.worker_environment(
        MODELRUNNER_IMAGE_URL_SCHEMES="s3", **queues, **overrides
    )
    env_args = [arg for key, value in environment.items() for arg in ("--env", f"{key}={value}")]
    docker(
        *("run", "--detach", "--name", name, "--network", "host"),
        *("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"),
        *("--security-opt", "no-new-privileges"),
        *env_args,
        *docker_args,
        WORKER,
    )
    return Worker(name, queues["MODELRUNNER_IMAGE_QUEUE"])


@pytest.fixture
def queues(emulator: Emulator) -> dict[str, str]:
    return own_queues(emulator.sqs, f"container-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of the containers a test started: removed after it, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        print(logs(name, 40))  # noqa: T201 - shown on failure
        remove(name)


def submit(emulator: Emulator, worker: Worker, **extra: Any) -> str:
    job_id = f"container-{uuid.uuid4().hex[:12]}"
    request: dict[str, Any] = {
        "jobId": job_id,
        "imageUrls": [emulator.image_url],
        "outputs": [{"type": "S3", "bucket": emulator.local.resources.bucket, "prefix": "out"}],
        "imageProcessor": {"name": emulator.local.model_url, "type": "HTTP_ENDPOINT"},
        "imageProcessorTileSize": TILE,
        "imageProcessorTileOverlap": OVERLAP,
        **extra,
    }
    emulator.sqs.send_message(QueueUrl=worker.image_queue_url, MessageBody=json.dumps(request))
    return job_id


def grid_count(length: int) -> int:
    return max(1, math.ceil((length - OVERLAP) / (TILE - OVERLAP)))


def wait_for_log(name: str, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in logs(name):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not log {text!r} in {timeout_s}s")
        time.sleep(0.5)


def test_worker_container_runs_a_job_to_success(
    emulator: Emulator, queues: dict[str, str], containers: list[str]
) -> None:
    worker = start_worker(emulator, queues)
    containers.append(worker.name)
    job_id = submit(emulator, worker)
    statuses = emulator.statuses.wait_terminal(job_id, timeout_s=120)
    assert statuses[-1].attributes["status"] == "SUCCESS", statuses[-1].message

    bucket = emulator.local.resources.bucket
    body = emulator.s3.get_object(Bucket=bucket, Key=f"out/{job_id}.geojson")
    features = json.loads(body["Body"].read())["features"]
    assert len(features) == grid_count(WIDTH) * grid_count(HEIGHT) == 12
    to_wgs84 = Transformer.from_crs(32618, 4326, always_xy=True)
    for feature in features:
        minx, miny, maxx, maxy = feature["properties"]["imageBBox"]
        assert 0 <= minx < maxx <= WIDTH
        assert 0 <= miny < maxy <= HEIGHT
        assert maxx - minx == pytest.approx(102.4)  # the centerpoint model: +-10% of the tile
        lon, lat = to_wgs84.transform(*(TRANSFORM @ ((minx + maxx) / 2, (miny + maxy) / 2)))
        assert feature["properties"]["center_longitude"] == pytest.approx(lon, abs=1e-7)
        assert feature["properties"]["center_latitude"] == pytest.approx(lat, abs=1e-7)
        assert feature["properties"]["inferenceMetadata"]["jobId"] == job_id
        assert feature["properties"]["featureClasses"] == [{"iri": "sample_object", "score": 1.0}]


def test_worker_container_runs_unprivileged_on_a_read_only_root(
    emulator: Emulator, queues: dict[str, str], containers: list[str]
) -> None:
    worker = start_worker(emulator, queues)
    containers.append(worker.name)
    wait_for_log(worker.name, "worker polling")
    ids = docker("exec", worker.name, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert ids.split() == ["10001", "10001"]
    assert inspect("container", worker.name)["HostConfig"]["ReadonlyRootfs"] is True
    probe = "try: open('/app/probe', 'w')\nexcept OSError as err: print(err)"
    assert "Read-only file system" in docker("exec", worker.name, "python", "-c", probe)


def test_healthcheck_follows_the_loop(
    emulator: Emulator, queues: dict[str, str], containers: list[str]
) -> None:
    fast = {"MODELRUNNER_HEALTH_MAX_AGE_S": "3", "MODELRUNNER_POLL_WAIT_S": "1"}
    worker = start_worker(emulator, queues, *FAST_HEALTH, **fast)
    containers.append(worker.name)
    wait_for_health(worker.name, "healthy", timeout_s=60)
    # A stuck loop (the process frozen, not gone): the health file ages, the check fails.
    docker("kill", "--signal", "SIGSTOP", worker.name)
    assert wait_for_health(worker.name, "unhealthy", timeout_s=30) >= 2
    docker("kill", "--signal", "SIGCONT", worker.name)
    wait_for_health(worker.name, "healthy", timeout_s=30)


def test_docker_stop_releases_the_message_and_exits_0(
    emulator: Emulator, queues: dict[str, str], containers: list[str]
) -> None:
    slow = {
        "MODELRUNNER_GRACE_PERIOD_S": str(GRACE_PERIOD_S),
        "MODELRUNNER_VISIBILITY_TIMEOUT_S": "120",
        "MODELRUNNER_ENDPOINT_CONCURRENCY": "1",
    }
    first = start_worker(emulator, queues, **slow)
    containers.append(first.name)
    job_id = submit(emulator, first, imageProcessorParameters={"CustomAttributes": "sleep_ms=2000"})
    wait_for_log(first.name, f"job {job_id} image")
    started = time.monotonic()
    docker("stop", "--time", "60", first.name, timeout_s=90)
    stopped_in_s = time.monotonic() - started
    state = inspect("container", first.name)["State"]
    assert state["ExitCode"] == 0, state
    assert stopped_in_s < GRACE_PERIOD_S + 10, f"stopped in {stopped_in_s:.1f}s"
    assert "released message" in logs(first.name)
    # Released, not left invisible for 120 s: a second worker finishes the job at once.
    second = start_worker(emulator, queues)
    containers.append(second.name)
    statuses = emulator.statuses.wait_terminal(job_id, timeout_s=100)
    assert statuses[-1].attributes["status"] == "SUCCESS", statuses[-1].message
