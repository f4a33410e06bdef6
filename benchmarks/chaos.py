"""Kill storms on a fleet: does every job end once, with every feature once?

On the embedded local stack: a 4096 x 4096 incompressible GeoTIFF (16 regions of 1536 px at
tile 512 / overlap 64), the flood model (12 overlapping boxes per tile, a function of the
tile's pixels, 100 ms per tile), NMS, S3 and Kinesis outputs, a visibility timeout of 20 s and a
fleet of ``--workers`` worker processes. A clean run (no kills) gives the reference features.
Then each chaos run submits the job and kills a random worker with SIGKILL every 0.5 to 3 s
(``--kill-every``), starting a new one at once, until the job has a terminal status; it then
waits one visibility timeout and a sweep interval more and compares:

- terminal statuses published for the job (exactly one expected) and its outcome;
- the S3 features against the clean run's (pixel boxes and classes: exact or not);
- Kinesis: features on the stream for the job, and how many of them repeat an ``id``;
- the job's requests in the image DLQ.

    python -m benchmarks.chaos --runs 5 [--workers 3] [--kill-every 0.5,3]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

from benchmarks.imagery import make_image
from infra.local_stack import LocalStack

VISIBILITY_S = 20
SWEEP_S = 10
FLEET_ENV = {
    "MODELRUNNER_REGION_SIZE_PX": "1536",
    "MODELRUNNER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
    "MODELRUNNER_SWEEP_INTERVAL_S": str(SWEEP_S),
    "MODELRUNNER_GRACE_PERIOD_S": "2",
    "MODELRUNNER_ENDPOINT_CONCURRENCY": "4",
}
TERMINAL = {"SUCCESS", "PARTIAL", "FAILED"}


class Fleet:
    """Worker processes, killed and replaced."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            self.started += 1
            name = f"chaos-{self.started}"
            self.running[name] = self.stack.start_worker(name, **FLEET_ENV)

    def kill_one(self, rng: random.Random) -> None:
        with self.lock:
            name = rng.choice(sorted(self.running))
            process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.start()

    def stop(self) -> list[int]:
        with self.lock:
            stopping = list(self.running.values())
            self.running.clear()
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        return [process.wait(60) for process in stopping]


class Observer:
    """What a job left behind: statuses, features, stream records, dead letters."""

    def __init__(self, stack: LocalStack) -> None:
        session = boto3.session.Session(region_name="us-east-1")
        self.stack = stack
        self.sqs = session.client("sqs", endpoint_url=stack.endpoint_url)
        self.s3 = session.client("s3", endpoint_url=stack.endpoint_url)
        self.kinesis = session.client("kinesis", endpoint_url=stack.endpoint_url)
        self.statuses: dict[str, list[str]] = {}

    def drain_statuses(self) -> None:
        while True:
            reply = self.sqs.receive_message(
                QueueUrl=self.stack.resources.status_queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
            )
            messages = reply.get("Messages", [])
            if not messages:
                return
            for message in messages:
                envelope = json.loads(message["Body"])
                attributes = {
                    k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()
                }
                if attributes.get("status") in TERMINAL:
                    job = attributes.get("job_id", "")
                    self.statuses.setdefault(job, []).append(attributes["status"])
                self.sqs.delete_message(
                    QueueUrl=self.stack.resources.status_queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                )

    def wait_terminal(self, job_id: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.drain_statuses()
            if self.statuses.get(job_id):
                return True
            time.sleep(0.5)
        return False

    def features(self, job_id: str) -> list[tuple[Any, ...]]:
        body = self.s3.get_object(Bucket=self.stack.resources.bucket, Key=f"chaos/{job_id}.geojson")
        document = json.loads(body["Body"].read())
        return sorted(
            (
                tuple(round(v, 6) for v in f["properties"]["imageBBox"]),
                json.dumps(f["properties"]["featureClasses"], sort_keys=True),
            )
            for f in document["features"]
        )

    def stream_ids(self, job_id: str) -> list[str]:
        stream = self.stack.resources.stream
        ids: list[str] = []
        for shard in self.kinesis.list_shards(StreamName=stream)["Shards"]:
            iterator = self.kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                reply = self.kinesis.get_records(ShardIterator=iterator, Limit=1000)
                for record in reply["Records"]:
                    if record["PartitionKey"] == job_id:
                        data = json.loads(record["Data"])
                        ids += [f["id"] for f in data["features"]]
                if not reply["Records"] and reply.get("MillisBehindLatest", 0) == 0:
                    break
                iterator = reply.get("NextShardIterator")
        return ids

    def dead_letters(self, job_id: str) -> int:
        found = 0
        reply = self.sqs.receive_message(
            QueueUrl=self.stack.resources.image_dlq_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=0,
        )
        for message in reply.get("Messages", []):
            found += job_id in message["Body"]
        return found


def request_for(stack: LocalStack, image_url: str) -> dict[str, Any]:
    return {
        "jobId": f"chaos-{uuid.uuid4().hex[:10]}",
        "imageUrls": [image_url],
        "outputs": [
            {"type": "S3", "bucket": stack.resources.bucket, "prefix": "chaos"},
            {"type": "Kinesis", "stream": stack.resources.stream, "batchSize": 500},
        ],
        "imageProcessor": {"name": stack.model_url, "type": "HTTP_ENDPOINT"},
        "imageProcessorTileSize": 512,
        "imageProcessorTileOverlap": 64,
        "imageProcessorTileFormat": "GTIFF",
        "imageProcessorParameters": {
            "CustomAttributes": "model_selection=flood,flood_volume=12,flood_seed=tile,sleep_ms=100"
        },
    }


def run_job(
    stack: LocalStack,
    observer: Observer,
    image_url: str,
    workers: int,
    kill_every: tuple[float, float] | None,
    rng: random.Random,
) -> dict[str, Any]:
    """One job on a fresh fleet; with ``kill_every``, a kill storm until it ends."""
    fleet = Fleet(stack)
    for _ in range(workers):
        fleet.start()
    request = request_for(stack, image_url)
    job_id = request["jobId"]
    kills = 0
    ended = threading.Event()

    def storm() -> None:
        nonlocal kills
        assert kill_every is not None
        while not ended.wait(rng.uniform(*kill_every)):
            fleet.kill_one(rng)
            kills += 1

    killer = threading.Thread(target=storm, daemon=True) if kill_every else None
    started = time.monotonic()
    observer.sqs.send_message(
        QueueUrl=stack.resources.image_queue_url, MessageBody=json.dumps(request)
    )
    if killer is not None:
        killer.start()
    finished = observer.wait_terminal(job_id, 900)
    seconds = time.monotonic() - started
    ended.set()
    if killer is not None:
        killer.join(30)
    time.sleep(VISIBILITY_S + SWEEP_S + 5)  # anything redelivered or swept has run by now
    observer.drain_statuses()
    exits = fleet.stop()
    ids = observer.stream_ids(job_id)
    return {
        "job": job_id,
        "finished": finished,
        "seconds": round(seconds, 1),
        "kills": kills,
        "terminal": observer.statuses.get(job_id, []),
        "features": observer.features(job_id) if finished else [],
        "stream_features": len(ids),
        "stream_duplicates": len(ids) - len(set(ids)),
        "stream_repeats": max(Counter(ids).values(), default=0),
        "dead_letters": observer.dead_letters(job_id),
        "sigterm_exits": exits,
    }


def main() -> None:
    """Run a clean job then ``--runs`` kill storms; one JSON line per run and a summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", default="0.5,3")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--images", type=Path, default=Path("/tmp/modelrunner-bench"))
    args = parser.parse_args()
    low, high = (float(v) for v in args.kill_every.split(","))
    rng = random.Random(args.seed)
    path = make_image(args.images, 4096, "tiff")
    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp)) as stack:
        key = f"chaos/{uuid.uuid4().hex[:8]}/{path.name}"
        observer = Observer(stack)
        observer.s3.upload_file(str(path), stack.resources.image_bucket, key)
        image_url = f"s3://{stack.resources.image_bucket}/{key}"
        clean = run_job(stack, observer, image_url, args.workers, None, rng)
        reference = clean.pop("features")
        print(json.dumps({"clean": clean, "features": len(reference)}), flush=True)
        runs = []
        for number in range(args.runs):
            result = run_job(stack, observer, image_url, args.workers, (low, high), rng)
            result["exact"] = result.pop("features") == reference
            print(json.dumps({"run": number, **result}), flush=True)
            runs.append(result)
        summary = {
            "runs": len(runs),
            "kills": sum(r["kills"] for r in runs),
            "one_terminal_status": sum(r["terminal"] == ["SUCCESS"] for r in runs),
            "exact_features": sum(r["exact"] for r in runs),
            "stream_duplicates": sum(r["stream_duplicates"] for r in runs),
            "stream_features": sum(r["stream_features"] for r in runs),
            "clean_features": len(reference),
            "dead_letters": sum(r["dead_letters"] for r in runs),
            "sigterm_exits_nonzero": sum(any(e != 0 for e in r["sigterm_exits"]) for r in runs),
        }
        print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
