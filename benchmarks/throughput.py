"""End-to-end throughput and worker memory on the embedded local stack.

Makes a georeferenced GeoTIFF (default 10000 x 10000, 1 band uint8, tiled, deflate), uploads it
to the emulator, submits jobs (default tile 512 / overlap 128, NITF tiles, centerpoint model)
and reports, per run, tiles per second from submit to terminal status, and the worker's peak
resident memory (VmHWM). The median over runs is printed last.

    python -m benchmarks.throughput [--size 10000] [--tile 512] [--overlap 128] [--runs 3]
    python -m benchmarks.throughput --runs 1 --flood 1500 --kinesis   # about 1M features
    python -m benchmarks.throughput --sleep-ms 50 --concurrency 32      # a slow model
    python -m benchmarks.throughput --size 20000 --sleep-ms 50 --workers 4 --concurrency 4
                                                  # scale-out: regions shared by 4 workers
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from benchmarks.jobs import run_job
from infra.local_stack import LocalStack


def make_image(path: Path, size: int) -> None:
    """A tiled, deflate-compressed UTM GeoTIFF with smooth random content."""
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "crs": CRS.from_epsg(32618),
        "transform": Affine(0.5, 0, 583000, 0, -0.5, 4507000),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for _, window in dst.block_windows(1):
            base = rng.integers(60, 200, dtype=np.uint8)
            block = np.full((1, window.height, window.width), base, dtype=np.uint8)
            dst.write(block, window=window)


def proc_status_mib(pid: int, field: str) -> float:
    """A memory figure (VmHWM = peak RSS, VmRSS = current RSS) of a live process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size of a live process."""
    return proc_status_mib(pid, "VmHWM")


def main() -> None:
    """Run the benchmark and print one line per run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--format", default="NITF")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", default="16")
    parser.add_argument(
        "--flood", type=int, default=0, help="use the flood model with this many boxes per tile"
    )
    parser.add_argument("--kinesis", action="store_true", help="also write to Kinesis")
    parser.add_argument("--sleep-ms", type=int, default=0, help="model time per tile")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--region", default="10240", help="region size in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp) / "logs") as stack:
        image = Path(tmp) / "bench.tif"
        make_image(image, args.size)
        session = boto3.session.Session(region_name="us-east-1")
        s3 = session.client("s3", endpoint_url=stack.endpoint_url)
        s3.upload_file(str(image), stack.resources.image_bucket, "bench.tif")
        workers = []
        for number in range(args.workers):
            name = f"worker-{number + 1}"
            workers.append(
                stack.start_worker(
                    name,
                    MODELRUNNER_ENDPOINT_CONCURRENCY=args.concurrency,
                    MODELRUNNER_REGION_SIZE_PX=args.region,
                )
            )
            stack.wait_for_log(name, "worker polling")
        idle_rss = max(proc_status_mib(w.pid, "VmRSS") for w in workers)
        rates = []
        outputs: list[dict[str, object]] = [
            {"type": "S3", "bucket": stack.resources.bucket, "prefix": "bench"}
        ]
        if args.kinesis:
            outputs.append({"type": "Kinesis", "stream": stack.resources.stream})
        model = (
            f"model_selection=flood,flood_volume={args.flood}"
            if args.flood
            else f"model_selection=centerpoint,sleep_ms={args.sleep_ms}"
        )
        for run in range(args.runs):
            request = {
                "jobId": f"bench-{uuid.uuid4().hex[:8]}",
                "imageUrls": [f"s3://{stack.resources.image_bucket}/bench.tif"],
                "outputs": outputs,
                "imageProcessor": {"name": stack.model_url, "type": "HTTP_ENDPOINT"},
                "imageProcessorTileSize": args.tile,
                "imageProcessorTileOverlap": args.overlap,
                "imageProcessorTileFormat": args.format,
                "imageProcessorParameters": {"CustomAttributes": model},
            }
            started = time.monotonic()
            (record,) = run_job(stack, session, request)
            elapsed = time.monotonic() - started
            for number in range(args.workers):
                log_text = (stack.log_dir / f"worker-{number + 1}.log").read_text()
                for line in log_text.splitlines():
                    ours = request["jobId"] in line
                    if ours and ("after duplicate" in line or "written" in line):
                        print("  worker:", line.split(" INFO ", 1)[-1], flush=True)
            tiles = record.record.tile_count
            rates.append(tiles / elapsed)
            print(
                json.dumps(
                    {
                        "run": run,
                        "status": record.status.value,
                        "tiles": tiles,
                        "features": record.record.feature_count,
                        "seconds": round(elapsed, 2),
                        "tiles_per_s": round(tiles / elapsed, 1),
                        "workers": args.workers,
                        "worker_peak_rss_mib": [round(peak_rss_mib(w.pid), 1) for w in workers],
                    }
                ),
                flush=True,
            )
        print(
            f"median {statistics.median(rates):.1f} tiles/s over {len(rates)} runs;"
            f" {args.workers} worker(s): RSS idle {idle_rss:.0f} MiB,"
            f" peak {max(peak_rss_mib(w.pid) for w in workers):.0f} MiB (the largest)"
        )


if __name__ == "__main__":
    main()
