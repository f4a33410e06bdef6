"""Images that do not end SUCCESS: each ends once, PARTIAL or FAILED, and says why.

Failing tiles (some or all), a job past its deadline, an image deleted after planning.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.functional.distributed.fleet import Fleet, flood_request, run_job, settle, terminal
from tests.functional.helpers import Stack, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


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
