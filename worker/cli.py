"""``modelrunner``: submit image requests and follow them to their terminal status.

Works against any stack: AWS itself, or an emulator through ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from worker.errors import InvalidRequestError
from worker.messages import ImageRequest, RequestLimits, parse_image_request
from worker.settings import Settings
from worker.status import Status

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

POLL_INTERVAL_S = 1.0


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Build the ImageRequest JSON from a request file and/or command-line flags."""
    request: dict[str, Any] = json.loads(Path(args.request).read_text()) if args.request else {}
    request.setdefault("jobId", args.job_id or str(uuid.uuid4()))
    if args.image_url:
        request["imageUrls"] = list(args.image_url)
    if args.endpoint:
        request["imageProcessor"] = {"name": args.endpoint, "type": args.endpoint_type}
    if args.custom_attributes:
        request.setdefault("imageProcessorParameters", {})["CustomAttributes"] = (
            args.custom_attributes
        )
    outputs = list(request.get("outputs", []))
    if args.output_bucket:
        outputs.append({"type": "S3", "bucket": args.output_bucket, "prefix": args.output_prefix})
    if args.kinesis_stream:
        outputs.append({"type": "Kinesis", "stream": args.kinesis_stream})
    if outputs:
        request["outputs"] = outputs
    for flag, key in (
        ("tile_size", "imageProcessorTileSize"),
        ("tile_overlap", "imageProcessorTileOverlap"),
        ("tile_format", "imageProcessorTileFormat"),
        ("tile_compression", "imageProcessorTileCompression"),
    ):
        if getattr(args, flag) is not None:
            request[key] = getattr(args, flag)
    return request


def submit(
    sqs: SQSClient,
    queue_url: str,
    request: dict[str, Any],
    limits: RequestLimits | None = None,
) -> ImageRequest:
    """Validate a request locally (clear errors before it is queued), then send it.

    Raises:
        InvalidRequestError: If the request is not valid.
    """
    body = json.dumps(request)
    parsed = parse_image_request(body, limits)
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    return parsed


def image_records(
    dynamodb: DynamoDBClient, table: str, request: ImageRequest
) -> list[dict[str, str]]:
    """The job records of the request's images (strings; missing ones are left out)."""
    records = []
    for url in request.image_urls:
        item = dynamodb.get_item(
            TableName=table, Key={"image_id": {"S": f"{request.job_id}:{url}"}}, ConsistentRead=True
        ).get("Item")
        if item:
            record = {k: str(v.get("S", v.get("N", ""))) for k, v in item.items()}
            record["regions_done"] = str(len(item.get("regions_done", {}).get("NS", [])))
            records.append(record)
    return records


def wait_for_job(
    dynamodb: DynamoDBClient,
    table: str,
    request: ImageRequest,
    timeout_s: float,
    report: Callable[[str], None],
    poll_interval_s: float = POLL_INTERVAL_S,
) -> list[dict[str, str]]:
    """Poll the job records until every image is terminal; report progress as it changes.

    Raises:
        TimeoutError: If the images are not terminal after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        records = image_records(dynamodb, table, request)
        line = "; ".join(
            f"{r['status']} {r['regions_done']}/{r.get('region_count', '?')} regions"
            f" ({r.get('tile_count', '?')} tiles)"
            for r in records
        )
        if line and line != last:
            report(f"job {request.job_id}: {line}")
            last = line
        terminal = [r for r in records if Status(r["status"]).terminal]
        if len(terminal) == len(request.image_urls):
            return records
        time.sleep(poll_interval_s)
    raise TimeoutError(f"job {request.job_id} not finished after {timeout_s:.0f}s")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelrunner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit", help="submit an ImageRequest")
    sub.add_argument("request", nargs="?", help="ImageRequest JSON file (flags override it)")
    sub.add_argument("--job-id")
    sub.add_argument("--image-url", action="append", help="image URL (repeat for several)")
    sub.add_argument("--endpoint", help="SageMaker endpoint name or HTTP URL")
    sub.add_argument(
        "--endpoint-type", default="HTTP_ENDPOINT", choices=["HTTP_ENDPOINT", "SM_ENDPOINT"]
    )
    sub.add_argument("--custom-attributes", help="CustomAttributes for the model")
    sub.add_argument("--output-bucket")
    sub.add_argument("--output-prefix", default="")
    sub.add_argument("--kinesis-stream")
    sub.add_argument("--tile-size", type=int)
    sub.add_argument("--tile-overlap", type=int)
    sub.add_argument("--tile-format")
    sub.add_argument("--tile-compression")
    sub.add_argument("--wait", action="store_true", help="follow the job to its terminal status")
    sub.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    settings = Settings()
    session = boto3.session.Session(region_name=settings.aws_region)
    sqs = session.client("sqs")
    queue = settings.image_queue
    queue_url = queue if "://" in queue else sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    try:
        request = submit(sqs, queue_url, request_from_args(args), settings.request_limits)
    except (InvalidRequestError, OSError, json.JSONDecodeError) as err:
        print(f"modelrunner: {err}", file=sys.stderr)  # noqa: T201
        return 2
    print(f"submitted job {request.job_id}")  # noqa: T201
    if not args.wait:
        return 0
    records = wait_for_job(
        session.client("dynamodb"),
        settings.job_table,
        request,
        args.timeout,
        lambda line: print(line, flush=True),  # noqa: T201
    )
    return 0 if all(r["status"] == Status.SUCCESS for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
