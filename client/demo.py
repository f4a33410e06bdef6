"""``make run``: one job end to end on the embedded local stack.

Starts moto, the model server and a worker on 127.0.0.1, uploads the sample NITF image,
submits a request, shows progress until the terminal status, keeps the result (the GeoJSON
and a preview PNG of the image with the detections) in ``results/`` and prints their paths with
a summary, then stops everything it started.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import boto3

from client.preview import preview
from client.submit import submit, wait_for_job
from infra.local_stack import SAMPLE_IMAGE, LocalStack

LOG_DIR = Path(".local-stack")
RESULTS_DIR = Path("results")
JOB_TIMEOUT_S = 300.0


def _say(line: str) -> None:
    print(line, flush=True)  # noqa: T201 - this is a terminal program


def run() -> int:
    """Run the demonstration job; return the exit code."""
    _say(f"starting the local stack (logs in {LOG_DIR}/)")
    with LocalStack(LOG_DIR) as stack:
        resources = stack.resources
        stack.start_worker()
        session = boto3.session.Session(region_name="us-east-1")
        s3 = session.client("s3", endpoint_url=stack.endpoint_url)
        key = f"images/{SAMPLE_IMAGE.name}"
        s3.upload_file(str(SAMPLE_IMAGE), resources.image_bucket, key)
        request = {
            "jobId": f"demo-{uuid.uuid4().hex[:8]}",
            "jobName": "make-run",
            "imageUrls": [f"s3://{resources.image_bucket}/{key}"],
            "outputs": [
                {"type": "S3", "bucket": resources.bucket, "prefix": "results"},
                {"type": "Kinesis", "stream": resources.stream, "batchSize": 100},
            ],
            "imageProcessor": {"name": stack.model_url, "type": "HTTP_ENDPOINT"},
            "imageProcessorParameters": {"CustomAttributes": "model_selection=centerpoint"},
            "imageProcessorTileSize": 512,
            "imageProcessorTileOverlap": 128,
            "imageProcessorTileFormat": "NITF",
            "imageProcessorTileCompression": "NONE",
        }
        _say("request:\n" + json.dumps(request, indent=2))
        started = time.monotonic()
        parsed = submit(
            session.client("sqs", endpoint_url=stack.endpoint_url),
            resources.image_queue_url,
            request,
        )
        records = wait_for_job(
            session.client("dynamodb", endpoint_url=stack.endpoint_url),
            resources.job_table,
            parsed,
            JOB_TIMEOUT_S,
            _say,
        )
        elapsed = time.monotonic() - started
        for view in records:
            record = view.record
            _say(
                f"{view.status.value}: {view.image_url}\n"
                f"  tiles {record.tile_count} (failed {record.failed_tiles}),"
                f" features {record.feature_count},"
                f" {record.duration_s:.2f}s in the worker,"
                f" {elapsed:.2f}s from submit to status"
            )
        result_key = f"results/{parsed.job_id}.geojson"
        body = s3.get_object(Bucket=resources.bucket, Key=result_key)["Body"].read()
        features = json.loads(body)["features"]
        RESULTS_DIR.mkdir(exist_ok=True)
        geojson = RESULTS_DIR / f"{parsed.job_id}.geojson"
        geojson.write_bytes(body)
        picture = RESULTS_DIR / f"{parsed.job_id}.png"
        preview(str(SAMPLE_IMAGE), json.loads(body), str(picture))
        _say(f"result: s3://{resources.bucket}/{result_key} ({len(features)} features)")
        _say(f"kept here: {geojson} and {picture} (the image with each feature's box)")
        if features:
            first = dict(features[0])
            first["geometry"] = "(WGS84 polygon, omitted)"
            first["properties"] = {
                k: v for k, v in first["properties"].items() if k != "imageGeometry"
            }
            _say("first feature:\n" + json.dumps(first, indent=2))
        ok = all(v.status.value == "SUCCESS" for v in records)
    _say("local stack stopped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
