"""Many-image requests across a fleet: one request of N small images, 1 worker against 4.

Makes one georeferenced GeoTIFF (default 1024 x 1024: one region, 9 tiles at 512 / 64), uploads
it N times (default 40) under different keys, and for each fleet size starts that many worker
processes on the embedded local stack, submits one request naming every copy (centerpoint
model, ``--sleep-ms`` per tile to stand for a real model), and reports the seconds from submit
to the last terminal status, images per second and the speed-up over the first fleet size.

    python -m benchmarks.fanout [--images 40] [--workers 1,4] [--sleep-ms 500] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from benchmarks.jobs import run_job
from benchmarks.throughput import make_image
from infra.local_stack import LocalStack


def run_request(stack: LocalStack, urls: list[str], sleep_ms: int) -> tuple[float, list[str]]:
    """Submit one request of ``urls``; the seconds until every image ended, and the statuses."""
    session = boto3.session.Session(region_name="us-east-1")
    request: dict[str, Any] = {
        "jobId": f"fanout-{uuid.uuid4().hex[:8]}",
        "imageUrls": urls,
        "outputs": [{"type": "S3", "bucket": stack.resources.bucket, "prefix": "fanout"}],
        "imageProcessor": {"name": stack.model_url, "type": "HTTP_ENDPOINT"},
        "imageProcessorTileSize": 512,
        "imageProcessorTileOverlap": 64,
        "imageProcessorTileFormat": "GTIFF",
        "imageProcessorParameters": {
            "CustomAttributes": f"model_selection=centerpoint,sleep_ms={sleep_ms}"
        },
    }
    started = time.monotonic()
    records = run_job(stack, session, request)
    return time.monotonic() - started, [r.status.value for r in records]


def fleet_seconds(
    stack: LocalStack, workers: int, urls: list[str], args: argparse.Namespace
) -> list[float]:
    """Start ``workers`` workers, time ``args.runs`` requests, stop the workers."""
    processes = []
    for number in range(workers):
        name = f"fanout-{workers}-{number + 1}"
        processes.append(stack.start_worker(name))
        stack.wait_for_log(name, "worker polling")
    seconds = []
    try:
        for _ in range(args.runs):
            elapsed, statuses = run_request(stack, urls, args.sleep_ms)
            assert statuses == ["SUCCESS"] * len(urls), statuses
            seconds.append(elapsed)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
    return seconds


def main() -> None:
    """Run the benchmark and print one JSON line per fleet size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", default="1,4", help="fleet sizes, comma-separated")
    parser.add_argument("--sleep-ms", type=int, default=500, help="model time per tile")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp) / "logs") as stack:
        image = Path(tmp) / "small.tif"
        make_image(image, args.size)
        s3 = boto3.session.Session(region_name="us-east-1").client(
            "s3", endpoint_url=stack.endpoint_url
        )
        bucket = stack.resources.image_bucket
        urls = []
        for index in range(args.images):
            s3.upload_file(str(image), bucket, f"fanout/{index}.tif")
            urls.append(f"s3://{bucket}/fanout/{index}.tif")
        baseline = None
        for workers in (int(w) for w in args.workers.split(",")):
            seconds = statistics.median(fleet_seconds(stack, workers, urls, args))
            baseline = baseline or seconds
            line = {
                "workers": workers,
                "images": args.images,
                "seconds": round(seconds, 2),
                "images_per_s": round(args.images / seconds, 2),
                "speedup": round(baseline / seconds, 2),
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
