"""Bad requests: FAILED status naming the problem, message in the DLQ, worker goes on."""

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.functional.helpers import Stack, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


def test_bad_requests_are_failed_and_dead_lettered(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 256, 256), 200, dtype=np.uint8)
    good_url = stack.upload(write_geotiff(tmp_path / "small.tif", pixels, TRANSFORM, UTM))
    marker = uuid.uuid4().hex
    bad: list[tuple[str, str, str]] = []  # (job id, body, expected words)

    invalid_json = f'{{"jobId": "broken-{marker}", "imageUrls": ['
    bad.append(("unknown", invalid_json, "not valid JSON"))
    changes: list[tuple[str, dict[str, Any], str]] = [
        ("missing-urls", {"imageUrls": None}, "imageUrls"),
        ("bad-format", {"imageProcessorTileFormat": "BMP"}, "imageProcessorTileFormat"),
        (
            "overlap",
            {"imageProcessorTileOverlap": 512},
            "imageProcessorTileOverlap (512) must be smaller than imageProcessorTileSize (512)",
        ),
        (
            "http-image",
            {"imageUrls": ["https://example.com/image.tif"]},
            "'https://example.com/image.tif' is not allowed; allowed schemes: file, s3",
        ),
        (
            "endpoint-host",
            {"imageProcessor": {"name": "http://127.0.0.2:1/invocations", "type": "HTTP_ENDPOINT"}},
            "host 127.0.0.2 is not an allowed model host",
        ),
        (
            "no-image",
            {"imageUrls": [f"s3://{stack.local.resources.image_bucket}/none-{marker}.tif"]},
            "cannot open image",
        ),
    ]
    for name, change, words in changes:
        request = {**stack.request(good_url, jobId=f"{name}-{marker}"), **change}
        request = {k: v for k, v in request.items() if v is not None}
        bad.append((request["jobId"], json.dumps(request), words))
    good = stack.request(good_url)

    for _, body, _ in bad:
        stack.submit(body)
    stack.submit(json.dumps(good))

    assert stack.statuses.wait_terminal(good["jobId"])[-1].attributes["status"] == "SUCCESS"
    for job_id, _, words in bad:
        if job_id == "unknown":
            failed = [s for s in stack.statuses.wait_terminal("unknown") if words in s.message]
        else:
            failed = stack.statuses.wait_terminal(job_id)
        assert failed, f"no FAILED status for {job_id}"
        assert failed[-1].attributes["status"] == "FAILED"
        assert words in failed[-1].message
    dead = stack.dead_letters(bad[-1][0])
    for job_id, body, words in bad:
        matches = [reason for dead_body, reason in dead if dead_body == body]
        assert matches, f"{job_id} not in the DLQ"
        assert words in matches[0]
    assert stack.worker.poll() is None  # the worker is still running


def test_output_that_keeps_failing_fails_the_image_naming_the_sink(
    stack: Stack, tmp_path: Path
) -> None:
    pixels = np.full((1, 256, 256), 200, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "sink.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url,
        outputs=[
            {"type": "Kinesis", "stream": stack.local.resources.stream},
            {"type": "S3", "bucket": "no-such-bucket", "prefix": "out"},
        ],
    )
    body = json.dumps(request)
    stack.submit(body)
    statuses = stack.statuses.wait_terminal(request["jobId"])
    # The first delivery is released for a retry; the second gives up. The image started once.
    events = [s.attributes["status"] for s in statuses if s.attributes["status"] != "IN_PROGRESS"]
    assert events == ["STARTED", "FAILED"]
    assert "s3://no-such-bucket/out/" in statuses[-1].message
    assert "gave up after 2 attempts" in statuses[-1].message
    assert [reason for dead, reason in stack.dead_letters(request["jobId"]) if dead == body]
