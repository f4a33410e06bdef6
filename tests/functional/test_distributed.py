"""Several worker processes sharing images through the region queue, with crashes.

A stack of its own (moto, models), so that exactly the workers a test starts are running. A
proxy in front of the emulator (tests/functional/proxy.py) holds the one call a test aims at, so
a worker is killed exactly there: after the outcome is recorded and before its status goes out;
in the middle of the Kinesis writes, after a PutRecords call reached the stream and before the
worker heard back.
"""

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from infra.local_stack import LocalStack
from tests.functional.helpers import TERMINAL, Stack, StatusLog, stack_of, write_geotiff
from tests.functional.proxy import HoldingProxy, Match
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional

VISIBILITY_S = 6
WORKER_NUMBERS = itertools.count(1)
FLEET_ENV = {
    "MODELRUNNER_REGION_SIZE_PX": "512",
    "MODELRUNNER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
    "MODELRUNNER_MAX_ATTEMPTS": "3",
    "MODELRUNNER_RETRY_DELAY_S": "1",
    "MODELRUNNER_GRACE_PERIOD_S": "1",
    "MODELRUNNER_ENDPOINT_CONCURRENCY": "4",
    "MODELRUNNER_LOG_FORMAT": "json",
}
FLOOD = "model_selection=flood,flood_volume=12,flood_seed=tile"


class Fleet:
    """Worker processes started and stopped by the tests."""

    def __init__(self, local: LocalStack) -> None:
        self.local = local
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, **overrides: str) -> str:
        name = f"fleet-{next(WORKER_NUMBERS)}"  # a fresh log file for every worker
        health = {"MODELRUNNER_HEALTH_FILE": str(self.health_file(name))}
        self.running[name] = self.local.start_worker(name, **{**FLEET_ENV, **health, **overrides})
        self.local.wait_for_log(name, "worker polling")
        return name

    def health_file(self, name: str) -> Path:
        return self.local.log_dir / f"{name}.health"

    def log(self, name: str) -> str:
        return (self.local.log_dir / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for name in list(self.running):
            process = self.running.pop(name)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0


@pytest.fixture(scope="module")
def fleet_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with LocalStack(tmp_path_factory.mktemp("fleet")) as local:
        yield stack_of(local, None)  # type: ignore[arg-type]  # the fleet starts its own


@pytest.fixture
def fleet(fleet_stack: Stack) -> Iterator[Fleet]:
    workers = Fleet(fleet_stack.local)
    yield workers
    workers.stop_all()


@pytest.fixture(scope="module")
def image_url(fleet_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """1500 x 1000 px: at tile 256 / overlap 32 and region 512, 35 tiles in 12 regions."""
    pixels = np.random.default_rng(7).integers(0, 255, (1, 1000, 1500), dtype=np.uint8)
    path = tmp_path_factory.mktemp("fleet-image") / "fleet.tif"
    return fleet_stack.upload(write_geotiff(path, pixels, TRANSFORM, UTM))


def flood_request(stack: Stack, image_url: str) -> dict[str, Any]:
    return stack.request(
        image_url,
        imageProcessorTileSize=256,
        imageProcessorTileOverlap=32,
        imageProcessorTileFormat="GTIFF",
        imageProcessorParameters={"CustomAttributes": FLOOD},
    )


def summary(document: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What must not depend on who did the work: pixel boxes, classes and scores."""
    return sorted(
        (
            tuple(round(v, 6) for v in f["properties"]["imageBBox"]),
            json.dumps(f["properties"]["featureClasses"], sort_keys=True),
        )
        for f in document["features"]
    )


def run_job(stack: Stack, request: dict[str, Any], timeout_s: float = 180) -> list[Any]:
    stack.submit(json.dumps(request))
    return stack.statuses.wait_terminal(request["jobId"], timeout_s=timeout_s)


def settle(stack: Stack, job_id: str, quiet_s: float = VISIBILITY_S + 4) -> list[Any]:
    """Statuses of ``job_id`` after nothing can be redelivered any more."""
    deadline = time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        stack.statuses._drain()
    return stack.statuses.by_job[job_id]


def terminal(statuses: list[Any]) -> list[str]:
    return [s.attributes["status"] for s in statuses if s.attributes["status"] in TERMINAL]


@pytest.fixture(scope="module")
def clean_result(fleet_stack: Stack, image_url: str) -> list[tuple[Any, ...]]:
    """The features of one worker doing every region."""
    workers = Fleet(fleet_stack.local)
    workers.start()
    try:
        request = flood_request(fleet_stack, image_url)
        statuses = run_job(fleet_stack, request)
        assert terminal(statuses) == ["SUCCESS"]
        return summary(fleet_stack.result(request["jobId"]))
    finally:
        workers.stop_all()


def test_three_workers_give_the_output_of_one(
    fleet_stack: Stack, fleet: Fleet, image_url: str, clean_result: list[tuple[Any, ...]]
) -> None:
    names = [fleet.start() for _ in range(3)]
    request = flood_request(fleet_stack, image_url)
    statuses = run_job(fleet_stack, request)

    assert summary(fleet_stack.result(request["jobId"])) == clean_result
    assert len(clean_result) > 100
    assert terminal(settle(fleet_stack, request["jobId"])) == ["SUCCESS"]
    staged = {
        int(m.group(1))
        for name in names
        for m in re.finditer(
            rf"job {request['jobId']} image \S+ region (\d+)/12 done", fleet.log(name)
        )
    }
    assert staged == set(range(1, 13))
    workers_with_regions = [
        name for name in names if f"job {request['jobId']} image" in fleet.log(name)
    ]
    assert len(workers_with_regions) >= 2, "the regions were shared"
    # JSON log lines carry the ids; EMF metric events describe every region.
    lines = [json.loads(line) for name in names for line in fleet.log(name).splitlines()]
    mine = [line for line in lines if line.get("job_id") == request["jobId"]]
    assert any("region_id" in line and "message" in line for line in mine)
    region_metrics = [line for line in mine if "_aws" in line and "Tiles" in line]
    assert sorted(int(line["region_id"]) for line in region_metrics) == list(range(1, 13))
    assert sum(line["Tiles"] for line in region_metrics) == 35
    assert all(line["InputFormat"] == "GTiff" for line in region_metrics)
    image_metrics = [line for line in mine if "_aws" in line and "Features" in line]
    assert [line["Features"] for line in image_metrics] == [len(clean_result)]
    for name in names:  # the container health check passes for each live worker
        check = subprocess.run(
            [sys.executable, "-m", "worker.health"],
            env={**os.environ, "MODELRUNNER_HEALTH_FILE": str(fleet.health_file(name))},
            check=False,
        )
        assert check.returncode == 0
    record = fleet_stack.job_record(request["jobId"], image_url)
    assert record["final_status"] == "SUCCESS"
    assert sorted(int(r) for r in record["regions_done"]) == list(range(1, 13))
    assert statuses[-1].attributes["failed_tiles"] == "[]"
    assert statuses[-1].attributes["failed_tile_count"] == "0"
    # Region statuses went to the region topic, one per region at least.
    region_log = StatusLog(fleet_stack.sqs, fleet_stack.local.resources.region_status_queue_url)
    region_log._drain()
    deadline = time.monotonic() + 10
    while len(region_log.by_job.get(request["jobId"], [])) < 12 and time.monotonic() < deadline:
        region_log._drain()
    region_ids = {s.attributes["region_id"] for s in region_log.by_job[request["jobId"]]}
    assert region_ids == {str(i) for i in range(1, 13)}


# Where to kill (a log line of the worker) and how long after it.
CRASH_POINTS = {
    "planning": (r"tiles in 12 region\(s\)", 0.0),
    "tiling": (r"region \d+/12: \d+ tiles over", 0.2),
    "staged": (r"region \d+ staged", 0.0),
    "finalising": (r"finalising 12 regions", 0.0),
}


def kill_on_log(fleet: Fleet, job_id: str, pattern: str, delay_s: float) -> threading.Thread:
    """Kill -9 the first running worker that logs ``pattern`` for ``job_id``."""
    expression = re.compile(rf"job {re.escape(job_id)}.*{pattern}")

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for name in list(fleet.running):
                if expression.search(fleet.log(name)):
                    time.sleep(delay_s)
                    fleet.kill(name)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_kill_9_at_any_point_loses_and_duplicates_nothing(
    fleet_stack: Stack,
    fleet: Fleet,
    image_url: str,
    clean_result: list[tuple[Any, ...]],
    point: str,
) -> None:
    for _ in range(2):
        fleet.start()
    request = flood_request(fleet_stack, image_url)
    pattern, delay_s = CRASH_POINTS[point]
    watcher = kill_on_log(fleet, request["jobId"], pattern, delay_s)
    fleet_stack.submit(json.dumps(request))
    watcher.join(120)
    assert len(fleet.running) == 1, f"no worker was killed at {point}"
    fleet.start()  # the platform replaces the lost worker

    fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=180)
    assert terminal(settle(fleet_stack, request["jobId"])) == ["SUCCESS"]
    assert summary(fleet_stack.result(request["jobId"])) == clean_result


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


def test_failing_tiles_make_the_image_partial_and_are_listed(
    fleet_stack: Stack, fleet: Fleet, tmp_path: Path
) -> None:
    fleet.start()
    fleet.start()
    pixels = np.full((1, 1000, 1500), 200, dtype=np.uint8)
    pixels[:, :200, :200] = 40  # top-left tile mean ~102: the failure model replies non-GeoJSON
    url = fleet_stack.upload(write_geotiff(tmp_path / "partial.tif", pixels, TRANSFORM, UTM))
    request = fleet_stack.request(
        url,
        imageProcessorTileSize=256,
        imageProcessorTileOverlap=32,
        imageProcessorParameters={"CustomAttributes": "model_selection=failure"},
    )
    statuses = run_job(fleet_stack, request)
    final = statuses[-1]
    assert final.attributes["status"] == "PARTIAL"
    assert final.attributes["failed_tile_count"] == "1"
    assert json.loads(final.attributes["failed_tiles"]) == [[[0, 0], [256, 256]]]
    assert "failed tiles (row,col size): 0,0 256x256: model reply is not" in final.message
    record = fleet_stack.job_record(request["jobId"], url)
    assert record["failed_tile_list"][0]["S"].startswith("0,0 256x256: model reply")
    (details,) = record["failed_tile_details"]
    assert {k: next(iter(v.values())) for k, v in details["M"].items() if k != "reason"} == {
        "row": "0",
        "col": "0",
        "width": "256",
        "height": "256",
    }
    assert len(fleet_stack.result(request["jobId"])["features"]) == 34


def test_every_tile_failing_fails_the_image(
    fleet_stack: Stack, fleet: Fleet, tmp_path: Path
) -> None:
    fleet.start()
    pixels = np.full((1, 600, 600), 40, dtype=np.uint8)
    url = fleet_stack.upload(write_geotiff(tmp_path / "dark.tif", pixels, TRANSFORM, UTM))
    request = fleet_stack.request(
        url,
        imageProcessorTileSize=256,
        imageProcessorTileOverlap=32,
        imageProcessorParameters={"CustomAttributes": "model_selection=failure"},
    )
    statuses = run_job(fleet_stack, request)
    assert terminal(statuses) == ["FAILED"]
    assert "all 9 tiles failed" in statuses[-1].message
    assert "9 tiles (9 failed)" in statuses[-1].message
    assert statuses[-1].attributes["failed_tile_count"] == "9"
    assert len(json.loads(statuses[-1].attributes["failed_tiles"])) == 9
    record = fleet_stack.job_record(request["jobId"], url)
    assert (record["tile_count"], record["failed_tiles"]) == ("9", "9")
    assert len(record["failed_tile_details"]) == 9
    # Its message was settled when it started: the finaliser puts the request in the DLQ.
    letters = [
        (body, reason)
        for body, reason in fleet_stack.dead_letters(wait_for=request["jobId"])
        if request["jobId"] in body
    ]
    assert len(letters) == 1
    assert json.loads(letters[0][0]) == request
    assert "all 9 tiles failed" in letters[0][1]


def test_sigterm_releases_the_region_in_hand(
    fleet_stack: Stack, fleet: Fleet, image_url: str
) -> None:
    first = fleet.start(MODELRUNNER_MAX_IN_FLIGHT="1", MODELRUNNER_VISIBILITY_TIMEOUT_S="120")
    request = flood_request(fleet_stack, image_url)
    request["imageProcessorParameters"] = {"CustomAttributes": "sleep_ms=300"}
    fleet_stack.submit(json.dumps(request))
    fleet.local.wait_for_log(first, f"job {request['jobId']} image")
    process = fleet.running.pop(first)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert time.monotonic() - started < 15, "the grace period bounds the stop"
    assert "released message" in fleet.log(first) or "stopping" in fleet.log(first)
    # The released work is taken at once by another worker, not after the 120 s visibility.
    fleet.start(MODELRUNNER_VISIBILITY_TIMEOUT_S="120")
    statuses = fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=100)
    assert terminal(statuses) == ["SUCCESS"]


def test_job_deadline_fails_the_image_with_the_reason(
    fleet_stack: Stack, fleet: Fleet, image_url: str
) -> None:
    fleet.start(MODELRUNNER_JOB_DEADLINE_S="2")
    fleet.start(MODELRUNNER_JOB_DEADLINE_S="2")
    request = flood_request(fleet_stack, image_url)
    request["imageProcessorParameters"] = {"CustomAttributes": "sleep_ms=1000"}
    fleet_stack.submit(json.dumps(request))
    statuses = fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=60)
    assert terminal(settle(fleet_stack, request["jobId"])) == ["FAILED"]
    assert "job deadline exceeded: not finished 2s after it started" in statuses[-1].message


def test_image_gone_after_planning_still_ends_failed(
    fleet_stack: Stack, fleet: Fleet, tmp_path: Path
) -> None:
    pixels = np.random.default_rng(3).integers(0, 255, (1, 1000, 1500), dtype=np.uint8)
    url = fleet_stack.upload(write_geotiff(tmp_path / "gone.tif", pixels, TRANSFORM, UTM))
    request = flood_request(fleet_stack, url)
    request["imageProcessorParameters"] = {"CustomAttributes": "sleep_ms=500"}
    name = fleet.start(MODELRUNNER_MAX_IN_FLIGHT="1")
    fleet_stack.submit(json.dumps(request))
    fleet.local.wait_for_log(name, "tiles in 12 region(s)")
    bucket, key = url.removeprefix("s3://").split("/", 1)
    fleet_stack.s3.delete_object(Bucket=bucket, Key=key)

    statuses = fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=120)
    ended = terminal(settle(fleet_stack, request["jobId"]))
    # Whether a region's worker cannot open the image or cannot read its tiles, the image
    # ends once, naming it. Region 1 (2 x 2 tiles) was being read as the object went, so a
    # few of its tiles may have made it (PARTIAL); every tile of the other regions failed.
    assert len(ended) == 1
    assert ended[0] in {"FAILED", "PARTIAL"}
    assert "gone.tif" in statuses[-1].message
    tile_count = int(fleet_stack.job_record(request["jobId"], url)["tile_count"])
    failed = int(statuses[-1].attributes["failed_tile_count"])
    assert tile_count - failed <= 4
    assert (ended[0] == "FAILED") == (failed == tile_count)


def test_message_whose_workers_keep_dying_is_failed_and_dead_lettered(
    fleet_stack: Stack, fleet: Fleet, image_url: str
) -> None:
    queue_url = fleet_stack.local.resources.image_queue_url
    request = flood_request(fleet_stack, image_url)
    body = json.dumps(request)
    fleet_stack.submit(body)
    # Four deliveries that were never settled, as if four workers died holding the message.
    for _ in range(4):
        (message,) = fleet_stack.sqs.receive_message(
            QueueUrl=queue_url, WaitTimeSeconds=5, VisibilityTimeout=30
        )["Messages"]
        fleet_stack.sqs.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    fleet.start()
    statuses = fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=60)
    assert terminal(statuses) == ["FAILED"]
    assert "received 5 times without finishing" in statuses[-1].message
    dead = [
        reason
        for dead_body, reason in fleet_stack.dead_letters(request["jobId"])
        if dead_body == body
    ]
    assert dead
    assert "MODELRUNNER_MAX_RECEIVES=4" in dead[0]


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


def test_a_request_of_twenty_images_spreads_over_three_workers(
    fleet_stack: Stack, fleet: Fleet, tmp_path: Path
) -> None:
    names = [fleet.start() for _ in range(3)]
    pixels = np.random.default_rng(11).integers(0, 255, (1, 400, 400), dtype=np.uint8)
    urls = [
        fleet_stack.upload(write_geotiff(tmp_path / f"many-{i}.tif", pixels, TRANSFORM, UTM))
        for i in range(20)
    ]
    request = fleet_stack.request(
        urls[0],
        imageUrls=urls,
        imageProcessorTileSize=256,
        imageProcessorTileOverlap=32,
        imageProcessorParameters={"CustomAttributes": "sleep_ms=200"},
    )
    job_id = request["jobId"]
    fleet_stack.submit(json.dumps(request))
    fleet_stack.statuses.wait_terminal(job_id, count=20, timeout_s=120)
    assert terminal(settle(fleet_stack, job_id)) == ["SUCCESS"] * 20
    planned = {
        name: len(re.findall(rf"job {job_id} image \S+: 400x400 px", fleet.log(name)))
        for name in names
    }
    assert sum(planned.values()) == 20, planned
    assert all(planned.values()), f"every worker started images: {planned}"
    for index in range(20):  # outputs named as before
        features = fleet_stack.result(f"{job_id}_{index}")["features"]
        assert len(features) == 4
