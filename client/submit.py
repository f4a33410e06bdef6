"""``modelrunner submit``: build a request from a file and flags, validate it here, send it,
and with ``--wait`` follow it to the end of every image."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import boto3

from client.follow import JobProgress, follow, subscribe
from client.records import Submission, ended_for, image_views, summary
from client.settings import AWS_CONFIG, ClientSettings
from worker.contract.messages import ImageRequest
from worker.contract.parsing import RequestLimits, parse_image_request
from worker.contract.records import JobRecordView
from worker.contract.status import Status

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

POLL_INTERVAL_S = 1.0
Say = Callable[[str], None]


class Console(Protocol):
    """Where the command line writes: ``say`` to stdout, ``err`` to stderr."""

    def say(self, text: str) -> None:
        """A line of output."""

    def err(self, text: str) -> None:
        """A line of error output."""


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ImageRequest JSON from a request file and the flags; flags override the file."""
    request: dict[str, Any] = json.loads(Path(args.request).read_text()) if args.request else {}
    if args.job_id:
        request["jobId"] = args.job_id
    request.setdefault("jobId", str(uuid.uuid4()))
    if args.image_url:
        request["imageUrls"] = list(args.image_url)
    if args.endpoint:
        request["imageProcessor"] = {"name": args.endpoint, "type": args.endpoint_type}
    if args.custom_attributes:
        parameters = request.setdefault("imageProcessorParameters", {})
        parameters["CustomAttributes"] = args.custom_attributes
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


def send_request(sqs: SQSClient, queue_url: str, request: dict[str, Any]) -> Submission:
    """Send a request (already validated) to the image queue."""
    sent_at_s = time.time()
    reply = sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(request))
    return Submission(reply["MessageId"], sent_at_s)


def submit(
    sqs: SQSClient, queue_url: str, request: dict[str, Any], limits: RequestLimits | None = None
) -> ImageRequest:
    """Validate a request here (clear errors before it is queued), then send it.

    Raises:
        ValueError: If the request is not valid (the message names the field).
    """
    parsed = parse_image_request(json.dumps(request), limits)
    send_request(sqs, queue_url, request)
    return parsed


def wait_for_job(
    dynamodb: DynamoDBClient,
    table: str,
    request: ImageRequest,
    timeout_s: float,
    report: Say,
    submission: Submission | None = None,
    poll_interval_s: float = POLL_INTERVAL_S,
) -> list[JobRecordView]:
    """Poll the job records until every image has ended for ``submission``; report progress.

    Raises:
        TimeoutError: If the images have not ended after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        views = image_views(dynamodb, table, request)
        line = "; ".join(
            f"{v.status.value} {len(v.record.regions_done)}/{v.record.region_count} regions"
            f" ({v.record.tile_count} tiles)"
            for v in views
        )
        if line and line != last:
            report(f"job {request.job_id}: {line}")
            last = line
        if len([v for v in views if ended_for(v, submission)]) == len(request.image_urls):
            return views
        time.sleep(poll_interval_s)
    raise TimeoutError(f"job {request.job_id} not finished after {timeout_s:.0f}s")


class ProgressLine:
    """Shows progress lines: rewritten in place on a terminal, one per change otherwise; notes
    (what the worker says) go on lines of their own above it."""

    def __init__(self, stream: TextIO) -> None:
        """Write to ``stream``."""
        self._stream = stream
        self._tty = stream.isatty()
        self._drawn = ""

    def show(self, line: str) -> None:
        """Draw the progress line."""
        self._stream.write(f"\r{line}\x1b[K" if self._tty else f"{line}\n")
        self._stream.flush()
        self._drawn = line

    def note(self, text: str) -> None:
        """A line of its own, the progress line drawn again under it."""
        self._stream.write(f"\r\x1b[K{text}\n" if self._tty else f"{text}\n")
        if self._tty and self._drawn:
            self._stream.write(self._drawn)
        self._stream.flush()

    def close(self) -> None:
        """End the progress line."""
        if self._drawn and self._tty:
            self._stream.write("\n")
            self._stream.flush()


def _announce(views: list[JobRecordView], job_id: str, say: Say) -> None:
    """Say what a submission of a job that has run before does."""
    if not views:
        return
    if all(v.ended for v in views):
        states = ", ".join(f"{v.status.value} (run {v.record.run})" for v in views)
        say(f"job {job_id} ran before and ended {states}: this submission runs it again")
    else:
        say(f"job {job_id} is still in progress: this submission joins the run in progress")


def _follow_statuses(
    clients: tuple[SQSClient, Any],
    topic_arn: str,
    parsed: ImageRequest,
    send: Callable[[], Submission],
    timeout_s: float,
) -> str | None:
    """Send through ``send`` once subscribed, follow the statuses; the rejection, if any."""
    sqs, sns = clients
    progress = JobProgress(parsed.job_id, tuple(parsed.image_urls))
    with subscribe(sqs, sns, topic_arn, parsed.job_id) as subscription:
        send()
        line = ProgressLine(sys.stdout)
        try:
            follow(sqs, subscription, progress, timeout_s, line.show, note=line.note)
        finally:
            line.close()
    return progress.rejection


def run_submit(
    args: argparse.Namespace,
    settings: ClientSettings,
    session: boto3.session.Session,
    console: Console,
) -> int:
    """``modelrunner submit``; the exit code.

    Raises:
        ValueError: If the request is not valid (the message names the field).
    """
    say = console.say
    body = request_from_args(args)
    parsed = parse_image_request(json.dumps(body), settings.request_limits)
    sqs = session.client("sqs", config=AWS_CONFIG)
    dynamodb = session.client("dynamodb", config=AWS_CONFIG)
    queue = settings.image_queue
    queue_url = queue if "://" in queue else sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    _announce(image_views(dynamodb, settings.job_table, parsed), parsed.job_id, say)

    def send() -> Submission:
        sent = send_request(sqs, queue_url, body)
        say(f"submitted job {parsed.job_id}")
        return sent

    if not args.wait:
        send()
        return 0
    if settings.status_topic_arn:
        sns = session.client("sns", config=AWS_CONFIG)
        topic = settings.status_topic_arn
        rejection = _follow_statuses((sqs, sns), topic, parsed, send, args.timeout)
        if rejection:
            console.err(f"the worker rejected the request: {rejection}")
            return 1
        views = image_views(dynamodb, settings.job_table, parsed)
    else:  # no topic to listen to: follow the job records instead
        views = wait_for_job(
            dynamodb, settings.job_table, parsed, args.timeout, say, submission=send()
        )
    for view in views:
        say(summary(view))
    complete = len(views) == len(parsed.image_urls)
    return 0 if complete and all(v.status is Status.SUCCESS for v in views) else 1
