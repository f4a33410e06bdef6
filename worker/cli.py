"""``modelrunner``: submit image requests, follow them, fetch and preview their results.

Works against any stack: AWS itself, or an emulator through ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import boto3

from worker.errors import InvalidRequestError
from worker.follow import JobProgress, follow, subscribe
from worker.messages import ImageRequest, RequestLimits, parse_image_request
from worker.preview import preview
from worker.settings import Settings
from worker.status import Status

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient

POLL_INTERVAL_S = 1.0


def _say(text: str) -> None:
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(f"modelrunner: {text.removeprefix('modelrunner: ')}\n")


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


def plain(value: Any) -> Any:
    """A DynamoDB attribute value as a plain Python value."""
    kind, inner = next(iter(value.items()))
    if kind == "N":
        number = float(inner)
        return int(number) if number.is_integer() else number
    if kind in {"NS"}:
        return sorted(int(float(v)) for v in inner)
    if kind == "L":
        return [plain(v) for v in inner]
    if kind == "M":
        return {k: plain(v) for k, v in inner.items()}
    return inner


def job_records(
    dynamodb: DynamoDBClient, table: str, index: str, job_id: str
) -> list[dict[str, Any]]:
    """Every image record of a job (through the table's job id index)."""
    records: list[dict[str, Any]] = []
    paginator = dynamodb.get_paginator("query")
    for page in paginator.paginate(
        TableName=table,
        IndexName=index,
        KeyConditionExpression="job_id = :j",
        ExpressionAttributeValues={":j": {"S": job_id}},
    ):
        records += [{k: plain(v) for k, v in item.items()} for item in page.get("Items", [])]
    return sorted(records, key=lambda r: str(r.get("image_url", "")))


def describe_record(record: dict[str, Any]) -> str:
    """One image's state in a line or two."""
    status = record.get("final_status") or record.get("status", "?")
    done = len(record.get("regions_done", []))
    text = (
        f"{record.get('image_url')}: {status}, {done}/{record.get('region_count', '?')} regions,"
        f" {record.get('tile_count', '?')} tiles"
    )
    if "feature_count" in record:
        text += (
            f" ({record.get('failed_tiles', 0)} failed), {record['feature_count']} features"
            f" in {record.get('processing_duration', 0)}s"
        )
    if record.get("reason"):
        text += f"\n  reason: {record['reason']}"
    for output in record.get("outputs", []):
        text += f"\n  output: {output}"
    return text


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


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
    sub = commands.add_parser("status", help="show the state of a job's images")
    sub.add_argument("job_id")
    sub.add_argument("--json", action="store_true", help="print the records as JSON")
    sub = commands.add_parser("results", help="download a job's GeoJSON results from S3")
    sub.add_argument("job_id")
    sub.add_argument("--output-dir", default=".", help="where to write the files")
    sub = commands.add_parser("preview", help="a PNG of the image with the detections drawn")
    sub.add_argument("job_id")
    sub.add_argument("--output", default=None, help="PNG path (default <jobId>.png)")
    sub.add_argument("--max-size", type=int, default=1024, help="longest side in pixels")
    commands.add_parser("local", help="run the embedded local stack until interrupted")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "local":
        return run_local()
    settings = Settings()
    session = boto3.session.Session(region_name=settings.aws_region)
    if args.command == "submit":
        return run_submit(args, settings, session)
    records = job_records(
        session.client("dynamodb"), settings.job_table, settings.job_index, args.job_id
    )
    if not records:
        _err(f"modelrunner: no records of job {args.job_id}")
        return 1
    if args.command == "status":
        if args.json:
            _say(json.dumps(records, indent=2, default=str))
        else:
            for record in records:
                _say(describe_record(record))
        return 0
    if args.command == "results":
        return download_results(session.client("s3"), records, Path(args.output_dir))
    return write_preview(session.client("s3"), records, args)


def run_submit(args: argparse.Namespace, settings: Settings, session: boto3.session.Session) -> int:
    """``modelrunner submit``."""
    sqs = session.client("sqs")
    queue = settings.image_queue
    queue_url = queue if "://" in queue else sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    try:
        body = request_from_args(args)
        parsed = parse_image_request(json.dumps(body), settings.request_limits)
    except (InvalidRequestError, OSError, json.JSONDecodeError) as err:
        _err(f"modelrunner: {err}")
        return 2
    if not args.wait:
        submit(sqs, queue_url, body, settings.request_limits)
        _say(f"submitted job {parsed.job_id}")
        return 0
    dynamodb = session.client("dynamodb")
    try:
        if settings.status_topic_arn:
            progress = JobProgress(parsed.job_id, tuple(parsed.image_urls))
            sns = session.client("sns")
            with subscribe(sqs, sns, settings.status_topic_arn, parsed.job_id) as subscription:
                submit(sqs, queue_url, body, settings.request_limits)
                _say(f"submitted job {parsed.job_id}")
                with ProgressLine(sys.stdout) as show:
                    follow(sqs, subscription, progress, args.timeout, show)
            if progress.rejection:
                _err(f"the worker rejected the request: {progress.rejection}")
                return 1
            records = image_records(dynamodb, settings.job_table, parsed)
        else:  # no topic to listen to: follow the job records instead
            submit(sqs, queue_url, body, settings.request_limits)
            _say(f"submitted job {parsed.job_id}")
            records = wait_for_job(dynamodb, settings.job_table, parsed, args.timeout, _say)
    except TimeoutError as err:
        _err(str(err))
        return 1
    for record in records:
        _say(
            f"{record['image_url']}: {record['status']}, {record.get('feature_count', 0)} features"
        )
    complete = len(records) == len(parsed.image_urls)
    return 0 if complete and all(r["status"] == Status.SUCCESS for r in records) else 1


class ProgressLine:
    """Shows progress lines: rewritten in place on a terminal, one per change otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._drawn = False

    def __enter__(self) -> Callable[[str], None]:
        return self.show

    def __exit__(self, *_: object) -> None:
        if self._drawn and self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def show(self, line: str) -> None:
        """Draw one progress line."""
        self._stream.write(f"\r{line}\x1b[K" if self._tty else f"{line}\n")
        self._stream.flush()
        self._drawn = True


def _s3_outputs(records: list[dict[str, Any]]) -> list[str]:
    return [o for r in records for o in r.get("outputs", []) if str(o).startswith("s3://")]


def download_results(s3: S3Client, records: list[dict[str, Any]], directory: Path) -> int:
    """``modelrunner results``: every S3 output of the job into ``directory``."""
    outputs = _s3_outputs(records)
    if not outputs:
        _err("modelrunner: the job has no S3 results (yet)")
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    for url in outputs:
        bucket, key = split_s3_url(url)
        target = directory / Path(key).name
        s3.download_file(bucket, key, str(target))
        _say(f"{url} -> {target}")
    return 0


def write_preview(s3: S3Client, records: list[dict[str, Any]], args: argparse.Namespace) -> int:
    """``modelrunner preview``: the first image with an S3 result, boxes drawn."""
    for record in records:
        outputs = _s3_outputs([record])
        if not outputs:
            continue
        bucket, key = split_s3_url(outputs[0])
        collection = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        path = args.output or f"{args.job_id}.png"
        count = preview(str(record["image_url"]), collection, path, args.max_size)
        _say(f"wrote {path}: {record['image_url']} with {count} boxes")
        return 0
    _err("modelrunner: the job has no S3 results to preview (yet)")
    return 1


def run_local() -> int:
    """``modelrunner local``: the embedded stack and a worker, until Ctrl-C."""
    try:
        from infra.local_stack import LocalStack  # noqa: PLC0415 - only this command needs it
    except ModuleNotFoundError:
        _err("modelrunner local: the local stack is not installed here (the worker image holds")
        _err("the service alone): pip install 'modelrunner[local]' from a checkout")
        return 2

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LocalStack(Path(".local-stack")) as stack:
        stack.start_worker()
        stack.wait_for_log("worker", "worker polling")
        environment = {**stack.aws_env, **stack.resources.worker_environment()}
        for key, value in sorted(environment.items()):
            _say(f"export {key}={value}")
        _say(f"# model endpoint: {stack.model_url}")
        _say(f"# images bucket: s3://{stack.resources.image_bucket}")
        _say("# running; Ctrl-C stops everything")
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
