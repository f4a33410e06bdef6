"""Work spread over several workers: the regions of an image, the images of a request.

Whoever does the work, the output is that of one worker doing all of it.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.functional.distributed.fleet import (
    Fleet,
    flood_request,
    run_job,
    settle,
    summary,
    terminal,
)
from tests.functional.helpers import Stack, StatusLog, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


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
