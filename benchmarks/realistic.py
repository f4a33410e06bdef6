"""Throughput on realistic imagery from the local stack's S3, against two kinds of model server.

Every run starts a fresh local stack (moto, the project's model server, one worker), uploads
the image (:mod:`benchmarks.imagery`: incompressible 3-band uint8, uncompressed tiled GeoTIFF,
DEFLATE COG or uncompressed NITF; or ``easy``, the flat deflate image of
:mod:`benchmarks.throughput`), submits one job (tile 512 / overlap 128 by default) and reports,
from submit to terminal status:

- tiles/s;
- S3 GETs of the image, counted in the emulator's request log (the worker's header reads
  through GDAL included), and the image bytes the worker fetched / the image's size;
- tile latency P50 / P90 over all of the image's tiles (the worker's EMF region metrics);
- worker CPU seconds (user + system) and peak RSS (VmHWM).

Model servers: ``plain`` (:mod:`benchmarks.plain_model`: ``http.server``, one thread, HTTP/1.0,
accept queue 5, one centerpoint feature per tile) and ``models`` (``python -m models``,
threaded, HTTP/1.1 keep-alive, decodes the tile, centerpoint model; ``--sleep-ms`` makes each
tile take that long: a model server that scales).

Suites:

- ``main``: the realistic GeoTIFF with NITF and GTIFF tiles, the COG and the NITF source with
  NITF tiles, all against the plain server; the GeoTIFF against the project's server; the
  GeoTIFF with the read-ahead off; the easy image, labelled as such.
- ``limiter``: the GeoTIFF with NITF tiles against the plain server and against the project's
  server with ``--sleep-ms`` (50), each with the adaptive limit (``gradient``, up to 16) and
  with fixed limits (``aimd``, no throttling here) of 2, 4, 8 and 16, in the same sitting.
- ``memory``: the GeoTIFF at ``--memory-sizes`` (peak RSS against image size); a negative
  size is the easy image of that size (a 40000 x 40000 incompressible GeoTIFF is 4.8 GB, and
  moto reads the whole object for every GET).

    python -m benchmarks.realistic --suite main --runs 3
    python -m benchmarks.realistic --suite limiter --runs 3
    python -m benchmarks.realistic --suite memory --memory-sizes 10000,20000,-40000 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3

from benchmarks.imagery import make_image
from benchmarks.jobs import run_job
from benchmarks.throughput import make_image as make_easy_image
from benchmarks.throughput import peak_rss_mib
from infra.local_stack import LocalStack, free_port, wait_until_up

READ_LINE = re.compile(r"S3 GETs, ([\d.]+) MiB \(([\d.]+) of the image")


@dataclass(frozen=True)
class Case:
    """One configuration to run."""

    label: str
    image: str  # tiff | cog | nitf | easy
    tile_format: str = "NITF"
    server: str = "plain"  # plain | models
    limiter: str = "gradient"
    concurrency: int = 16
    read_ahead: bool = True
    size: int = 10000
    sleep_ms: int = 0


@dataclass
class Result:
    """What one run measured."""

    case: Case
    status: str
    tiles: int
    seconds: float
    gets: int
    fetched_ratio: float | None
    p50_ms: float | None
    p90_ms: float | None
    cpu_s: float
    rss_mib: float
    load: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tiles_per_s(self) -> float:
        """Tiles per second, submit to terminal status."""
        return self.tiles / self.seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def image_path(directory: Path, case: Case) -> Path:
    """The case's image file, made once."""
    if case.image != "easy":
        return make_image(directory, case.size, case.image)
    path = directory / f"easy-{case.size}.tif"
    if not path.exists():
        make_easy_image(path, case.size)
    return path


def _latencies(worker_log: str) -> tuple[float | None, float | None]:
    for line in worker_log.splitlines():
        if line.startswith('{"_aws"') and "TileLatencyP50" in line:
            record = json.loads(line)
            return record["TileLatencyP50"], record["TileLatencyP90"]
    return None, None


def run_case(case: Case, images: Path, logs: Path) -> Result:
    """One job of ``case`` on a fresh local stack."""
    return run_sitting([case], images, logs)[0]


def run_sitting(cases: list[Case], images: Path, logs: Path) -> list[Result]:
    """One job per case, one after another, on one fresh local stack (the first case's image;
    a fresh worker per case)."""
    path = image_path(images, cases[0])
    with LocalStack(logs) as stack:
        key = f"bench/{uuid.uuid4().hex[:8]}/{path.name}"
        session = boto3.session.Session(region_name="us-east-1")
        s3 = session.client("s3", endpoint_url=stack.endpoint_url)
        s3.upload_file(str(path), stack.resources.image_bucket, key)
        port = free_port()
        plain = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.plain_model", "--port", str(port)]
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/ping")
            urls = {"plain": f"http://127.0.0.1:{port}/invocations", "models": stack.model_url}
            return [
                _measure(case, stack, session, key, urls[case.server], f"worker-{number}")
                for number, case in enumerate(cases)
            ]
        finally:
            plain.terminate()
            plain.wait()


def _measure(
    case: Case,
    stack: LocalStack,
    session: boto3.session.Session,
    key: str,
    model_url: str,
    name: str,
) -> Result:
    worker = stack.start_worker(
        name,
        MODELRUNNER_ENDPOINT_CONCURRENCY=str(case.concurrency),
        MODELRUNNER_ENDPOINT_LIMITER=case.limiter,
        MODELRUNNER_READ_AHEAD=str(case.read_ahead).lower(),
        MODELRUNNER_METRICS="true",
    )
    stack.wait_for_log(name, "worker polling")
    request = {
        "jobId": f"bench-{uuid.uuid4().hex[:8]}",
        "imageUrls": [f"s3://{stack.resources.image_bucket}/{key}"],
        "outputs": [{"type": "S3", "bucket": stack.resources.bucket, "prefix": "bench"}],
        "imageProcessor": {"name": model_url, "type": "HTTP_ENDPOINT"},
        "imageProcessorTileSize": 512,
        "imageProcessorTileOverlap": 128,
        "imageProcessorTileFormat": case.tile_format,
        "imageProcessorParameters": {
            "CustomAttributes": f"model_selection=centerpoint,sleep_ms={case.sleep_ms}"
        },
    }
    get_line = f"GET /{stack.resources.image_bucket}/{key}"
    gets_before = (stack.log_dir / "moto.log").read_text(errors="replace").count(get_line)
    load = os.getloadavg()[0]
    cpu_before = cpu_seconds(worker.pid)
    started = time.monotonic()
    (record,) = run_job(stack, session, request)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(worker.pid) - cpu_before
    rss = peak_rss_mib(worker.pid)
    worker.terminate()
    worker.wait()
    moto_log = (stack.log_dir / "moto.log").read_text(errors="replace")
    worker_log = (stack.log_dir / f"{name}.log").read_text(errors="replace")
    # One read-ahead line per region: their ratios add up to the whole image's.
    fetched = [float(m.group(2)) for m in READ_LINE.finditer(worker_log)]
    p50, p90 = _latencies(worker_log)
    return Result(
        case=case,
        status=record.status.value,
        tiles=record.record.tile_count,
        seconds=seconds,
        gets=moto_log.count(get_line) - gets_before,
        fetched_ratio=round(sum(fetched), 2) if fetched else None,
        p50_ms=p50,
        p90_ms=p90,
        cpu_s=cpu,
        rss_mib=rss,
        load=load,
        extra={"image_mib": round(_object_bytes(session, stack, key) / 2**20, 1)},
    )


def _object_bytes(session: boto3.session.Session, stack: LocalStack, key: str) -> int:
    s3 = session.client("s3", endpoint_url=stack.endpoint_url)
    return int(s3.head_object(Bucket=stack.resources.image_bucket, Key=key)["ContentLength"])


def suite(name: str, sizes: list[int], sleep_ms: int) -> list[Case]:
    """The cases of a suite."""
    if name == "main":
        return [
            Case("GeoTIFF, NITF tiles, plain server", "tiff"),
            Case("GeoTIFF, GTIFF tiles, plain server", "tiff", "GTIFF"),
            Case("DEFLATE COG, NITF tiles, plain server", "cog"),
            Case("NITF source, NITF tiles, plain server", "nitf"),
            Case("GeoTIFF, NITF tiles, project's model server", "tiff", server="models"),
            Case("GeoTIFF, NITF tiles, plain server, read-ahead off", "tiff", read_ahead=False),
            Case(
                "easy image (flat deflate 1-band), NITF tiles, project's server",
                "easy",
                server="models",
            ),
        ]
    if name == "limiter":
        cases = []
        for server, sleep in (("plain", 0), ("models", sleep_ms)):
            cases.append(Case(f"{server} adaptive", "tiff", server=server, sleep_ms=sleep))
            cases += [
                Case(
                    f"{server} fixed {n}",
                    "tiff",
                    server=server,
                    limiter="aimd",
                    concurrency=n,
                    sleep_ms=sleep,
                )
                for n in (2, 4, 8, 16)
            ]
        return cases
    return [
        Case(f"GeoTIFF {s} x {s}, NITF tiles, plain server", "tiff", size=s)
        if s > 0
        else Case(f"easy image {-s} x {-s}, NITF tiles, plain server", "easy", size=-s)
        for s in sizes
    ]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(results: list[Result]) -> dict[str, Any]:
    """Medians over a case's runs."""
    first = results[0]
    return {
        "case": first.case.label,
        "runs": len(results),
        "statuses": sorted({r.status for r in results}),
        "tiles": first.tiles,
        "tiles_per_s": round(statistics.median(r.tiles_per_s for r in results), 1),
        "tiles_per_s_runs": [round(r.tiles_per_s, 1) for r in results],
        "s3_gets": _median([r.gets for r in results]),
        "fetched_over_image": _median([r.fetched_ratio for r in results]),
        "p50_ms": _median([r.p50_ms for r in results]),
        "p90_ms": _median([r.p90_ms for r in results]),
        "cpu_s": round(statistics.median(r.cpu_s for r in results), 2),
        "peak_rss_mib": round(statistics.median(r.rss_mib for r in results), 1),
        "load_1m": [round(r.load, 2) for r in results],
        **first.extra,
    }


def main() -> None:
    """Run a suite and print one JSON line per run and per case (medians)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", choices=("main", "limiter", "memory"), default="main")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sleep-ms", type=int, default=50)
    parser.add_argument("--memory-sizes", default="10000,20000,-40000")
    parser.add_argument(
        "--only",
        default="",
        help="run only the case of this label, or those whose label has this text",
    )
    parser.add_argument("--images", type=Path, default=Path("/tmp/modelrunner-bench"))
    parser.add_argument("--logs", type=Path, help="keep the stacks' logs here")
    args = parser.parse_args()
    cases = suite(args.suite, [int(s) for s in args.memory_sizes.split(",")], args.sleep_ms)
    exact = [c for c in cases if c.label == args.only]
    cases = exact or [c for c in cases if args.only in c.label]
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.logs or Path(tmp)
        if args.suite == "limiter":
            _limiter_sittings(cases, args.images, logs, args.runs)
            return
        for number, case in enumerate(cases):
            results = []
            for run in range(args.runs):
                result = run_case(case, args.images, logs / f"{number}-{run}")
                _print_run(run, result)
                results.append(result)
            print(json.dumps({"median": summarise(results)}), flush=True)


def _print_run(run: int, result: Result) -> None:
    line = {k: v for k, v in asdict(result).items() if k != "case"}
    print(json.dumps({"run": run, "case": result.case.label, **line}), flush=True)


def _limiter_sittings(cases: list[Case], images: Path, logs: Path, runs: int) -> None:
    """Each run is one sitting per server: its adaptive and fixed cases back to back, so the
    best fixed limit is measured under the same conditions as the adaptive one."""
    by_case: dict[str, list[Result]] = {case.label: [] for case in cases}
    servers = sorted({case.server for case in cases})
    for run in range(runs):
        for server in servers:
            sitting = [case for case in cases if case.server == server]
            for result in run_sitting(sitting, images, logs / f"{server}-{run}"):
                _print_run(run, result)
                by_case[result.case.label].append(result)
    for results in by_case.values():
        print(json.dumps({"median": summarise(results)}), flush=True)


if __name__ == "__main__":
    main()
