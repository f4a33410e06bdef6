"""Helpers that read what a user of the stack sees: statuses, DLQ, S3, Kinesis, job records."""

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

import boto3
import numpy as np
import rasterio
from affine import Affine
from mypy_boto3_dynamodb.client import DynamoDBClient
from mypy_boto3_kinesis.client import KinesisClient
from mypy_boto3_s3.client import S3Client
from mypy_boto3_sqs.client import SQSClient
from rasterio.crs import CRS

from infra.local_stack import LocalStack

TERMINAL = {"SUCCESS", "PARTIAL", "FAILED"}


@dataclass
class Status:
    """One SNS status message as delivered to the subscribed queue."""

    message: str
    attributes: dict[str, str]


@dataclass
class StatusLog:
    """Drains the status queue and keeps every message, by job id."""

    sqs: SQSClient
    queue_url: str
    by_job: dict[str, list[Status]] = field(default_factory=dict)

    def _drain(self) -> None:
        reply = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in reply.get("Messages", []):
            envelope = json.loads(message["Body"])
            attributes = {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()}
            status = Status(envelope["Message"], attributes)
            self.by_job.setdefault(attributes.get("job_id", ""), []).append(status)
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def wait_terminal(self, job_id: str, count: int = 1, timeout_s: float = 120) -> list[Status]:
        """Every status of ``job_id`` once ``count`` terminal ones have arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            statuses = self.by_job.get(job_id, [])
            if sum(s.attributes["status"] in TERMINAL for s in statuses) >= count:
                return statuses
            self._drain()
        raise AssertionError(f"no terminal status for {job_id}: {self.by_job.get(job_id)}")


@dataclass
class Stack:
    """Clients of the running local stack."""

    local: LocalStack
    worker: Popen[bytes]
    sqs: SQSClient
    s3: S3Client
    kinesis: KinesisClient
    dynamodb: DynamoDBClient
    statuses: StatusLog

    def submit(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.local.resources.image_queue_url, MessageBody=body)

    def upload(self, path: Path) -> str:
        bucket = self.local.resources.image_bucket
        key = f"images/{uuid.uuid4().hex}/{path.name}"
        self.s3.upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"

    def request(self, image_url: str, **extra: Any) -> dict[str, Any]:
        request: dict[str, Any] = {
            "jobId": f"job-{uuid.uuid4().hex[:12]}",
            "imageUrls": [image_url],
            "outputs": [{"type": "S3", "bucket": self.local.resources.bucket, "prefix": "out"}],
            "imageProcessor": {"name": self.local.model_url, "type": "HTTP_ENDPOINT"},
            "imageProcessorTileSize": 512,
            "imageProcessorTileOverlap": 64,
        }
        request.update(extra)
        return request

    def result(self, job_id: str, prefix: str = "out") -> dict[str, Any]:
        body = self.s3.get_object(
            Bucket=self.local.resources.bucket, Key=f"{prefix}/{job_id}.geojson"
        )
        document: dict[str, Any] = json.loads(body["Body"].read())
        return document

    def dead_letters(self, wait_for: str | None = None) -> list[tuple[str, str]]:
        """(body, reason) of every message now in the image DLQ (left in place).

        With ``wait_for``, wait (up to 15 s) until a body containing it is there: a request is
        dead-lettered just after its FAILED status is published.
        """
        found: dict[str, tuple[str, str]] = {}
        deadline = time.monotonic() + 15
        while True:
            for _ in range(5):
                reply = self.sqs.receive_message(
                    QueueUrl=self.local.resources.image_dlq_url,
                    MaxNumberOfMessages=10,
                    MessageAttributeNames=["All"],
                    VisibilityTimeout=0,
                )
                for message in reply.get("Messages", []):
                    attributes = message.get("MessageAttributes", {})
                    reason = (
                        attributes["reason"].get("StringValue", "")
                        if "reason" in attributes
                        else ""
                    )
                    found[message["MessageId"]] = (message["Body"], reason)
            waiting = wait_for is not None and not any(wait_for in b for b, _ in found.values())
            if not waiting or time.monotonic() > deadline:
                return list(found.values())
            time.sleep(0.2)

    def job_record(self, job_id: str, image_url: str) -> dict[str, Any]:
        item = self.dynamodb.get_item(
            TableName=self.local.resources.job_table,
            Key={"image_id": {"S": f"{job_id}:{image_url}"}},
            ConsistentRead=True,
        )["Item"]
        return {k: next(iter(v.values())) for k, v in item.items()}

    def kinesis_records(self, job_id: str) -> list[dict[str, Any]]:
        stream = self.local.resources.stream
        records = []
        for shard in self.kinesis.list_shards(StreamName=stream)["Shards"]:
            iterator = self.kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            reply = self.kinesis.get_records(ShardIterator=iterator, Limit=10000)
            records += [
                {
                    "partition_key": r["PartitionKey"],
                    "data": json.loads(r["Data"]),
                    "shard": shard["ShardId"],
                }
                for r in reply["Records"]
                if r["PartitionKey"] == job_id
            ]
        return records


def write_geotiff(path: Path, pixels: np.ndarray, transform: Affine, crs: CRS) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=pixels.shape[2],
        height=pixels.shape[1],
        count=pixels.shape[0],
        dtype=pixels.dtype,
        transform=transform,
        crs=crs,
        tiled=True,
    ) as dst:
        dst.write(pixels)
    return path


def own_queues(sqs: SQSClient, name: str) -> dict[str, str]:
    """Fresh image/region queues (and DLQs) for a worker of its own: the worker overrides."""
    urls = {
        key: sqs.create_queue(QueueName=f"{name}-{key.lower().replace('_', '-')}")["QueueUrl"]
        for key in ("IMAGE_QUEUE", "IMAGE_DLQ", "REGION_QUEUE", "REGION_DLQ")
    }
    return {f"MODELRUNNER_{key}": url for key, url in urls.items()}


def own_worker(stack: Stack, prefix: str, **overrides: str) -> tuple[Popen[bytes], dict[str, str]]:
    """A worker on queues of its own (log ``worker-<name>.log``): the process and its queues."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    queues = own_queues(stack.sqs, name)
    return stack.local.start_worker(f"worker-{name}", **overrides, **queues), queues


def stack_of(local: LocalStack, worker: Popen[bytes]) -> Stack:
    """Clients of ``local`` (a running local stack) with ``worker`` as its worker."""
    session = boto3.session.Session(region_name="us-east-1")
    url = local.endpoint_url
    sqs = session.client("sqs", endpoint_url=url)
    return Stack(
        local=local,
        worker=worker,
        sqs=sqs,
        s3=session.client("s3", endpoint_url=url),
        kinesis=session.client("kinesis", endpoint_url=url),
        dynamodb=session.client("dynamodb", endpoint_url=url),
        statuses=StatusLog(sqs, local.resources.status_queue_url),
    )
