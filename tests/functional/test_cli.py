"""The ``modelrunner`` command line against the running local stack."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from tests.functional.helpers import Stack, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


def modelrunner(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        env={**os.environ, **stack.local.worker_environment()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_submit_wait_status_results_and_preview(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 800, 1200), 120, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "cli.tif", pixels, TRANSFORM, UTM))
    job_id = "cli-job-1"
    submitted = modelrunner(
        stack,
        "submit",
        *("--job-id", job_id, "--image-url", image_url, "--endpoint", stack.local.model_url),
        *("--output-bucket", stack.local.resources.bucket, "--output-prefix", "cli"),
        *("--tile-size", "512", "--tile-overlap", "64", "--tile-format", "GTIFF", "--wait"),
    )
    assert submitted.returncode == 0, submitted.stderr
    assert f"submitted job {job_id}" in submitted.stdout
    # Progress comes from the status messages: it ends with every tile of the one image done.
    progress = [line for line in submitted.stdout.splitlines() if line.startswith("[")]
    assert progress[-1] == "[" + "#" * 30 + "] 100% 6/6 tiles, 1/1 images ended"
    assert f"{image_url}: SUCCESS, 6 tiles (0 failed), 6 features" in submitted.stdout

    status = modelrunner(stack, "status", job_id)
    assert status.returncode == 0, status.stderr
    expected = f"{image_url}: SUCCESS (run 1), 1/1 regions, 6 tiles (0 failed), 6 features"
    assert expected in status.stdout
    assert f"output: s3://{stack.local.resources.bucket}/cli/{job_id}.geojson" in status.stdout
    records = json.loads(modelrunner(stack, "status", job_id, "--json").stdout)
    assert (records[0]["status"], records[0]["tile_count"]) == ("SUCCESS", 6)

    results = modelrunner(stack, "results", job_id, "--output-dir", str(tmp_path / "out"))
    assert results.returncode == 0, results.stderr
    document = json.loads((tmp_path / "out" / f"{job_id}.geojson").read_text())
    assert len(document["features"]) == 6

    png = tmp_path / "preview.png"
    shown = modelrunner(stack, "preview", job_id, "--output", str(png), "--max-size", "300")
    assert shown.returncode == 0, shown.stderr
    assert "with 6 boxes" in shown.stdout
    assert not shown.stderr  # no library warnings on the user's terminal
    with warnings.catch_warnings():  # a PNG has no georeferencing
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        src = rasterio.open(png)
    with src:
        assert (src.width, src.height) == (300, 200)
        rgb = src.read()
    red = (rgb[0] == 255) & (rgb[1] == 32) & (rgb[2] == 32)
    # Each box outline lands where its imageBBox says, at a quarter of the size.
    for feature in document["features"]:
        minx, miny, maxx, maxy = (round(v / 4) for v in feature["properties"]["imageBBox"])
        assert red[miny, minx:maxx].all()
        assert red[miny:maxy, minx].all()
    assert not red[:10, :10].any(), "nothing drawn away from the boxes"


def test_unknown_job_and_bad_request_are_clear(stack: Stack, tmp_path: Path) -> None:
    missing = modelrunner(stack, "status", "no-such-job")
    assert missing.returncode == 1
    assert "no records of job no-such-job" in missing.stderr
    bad = modelrunner(stack, "submit", "--image-url", "s3://b/k.tif", "--tile-size", "64")
    assert bad.returncode == 2
    assert "imageProcessor" in bad.stderr
    for result in (missing, bad):  # one line each, ending in a newline
        assert result.stderr.startswith("modelrunner: ")
        assert result.stderr.endswith("\n")
        assert result.stderr.count("\n") == 1


def test_submit_wait_reports_a_request_the_worker_rejects(stack: Stack) -> None:
    # Valid for the client, but the worker only calls endpoints on its allowlist.
    rejected = modelrunner(
        stack,
        "submit",
        *("--job-id", "cli-rejected", "--image-url", "s3://b/k.tif"),
        *("--endpoint", "http://10.255.255.1/invocations", "--wait", "--timeout", "60"),
        *("--output-bucket", stack.local.resources.bucket),
    )
    assert rejected.returncode == 1
    assert "the worker rejected the request" in rejected.stderr
    assert "10.255.255.1" in rejected.stderr
    assert rejected.stdout.splitlines()[-1].endswith("1/1 images ended")
