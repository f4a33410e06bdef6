"""Follow a job through its status messages: tiles done / total, until every image has ended.

``modelrunner submit --wait`` subscribes a short-lived queue to the status topic (filtered on
the job id, raw delivery so the attributes arrive as message attributes) *before* it sends the
request, so no event is missed, and removes the queue and the subscription when it is done.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.contract.status import Status

if TYPE_CHECKING:
    from mypy_boto3_sns.client import SNSClient
    from mypy_boto3_sqs.client import SQSClient

BAR_WIDTH = 30
SILENCE_NOTE_S = 60.0


@dataclass
class ImageProgress:
    """What the status messages have said about one image."""

    tile_count: int | None = None
    region_done: dict[str, int] = field(default_factory=dict)
    region_total: dict[str, int] = field(default_factory=dict)
    status: Status | None = None

    @property
    def tiles_done(self) -> int:
        """Tiles done over all regions heard of (all of them once the image has ended)."""
        if self.status is not None and self.status.terminal and self.tile_count is not None:
            return self.tile_count
        return sum(self.region_done.values())

    @property
    def total(self) -> int | None:
        """The image's tile count (from STARTED, else the sum of the regions heard of)."""
        return self.tile_count if self.tile_count is not None else sum(self.region_total.values())


@dataclass
class JobProgress:
    """Progress of one job's images, folded from status message attributes."""

    job_id: str
    image_urls: tuple[str, ...]
    images: dict[str, ImageProgress] = field(default_factory=dict)
    rejection: str | None = None
    notes: list[str] = field(default_factory=list)  # what the worker said besides progress

    def update(self, attributes: dict[str, str], message: str = "") -> None:
        """Fold in one status message (other jobs' messages are ignored).

        A terminal event without an image is the worker rejecting the whole request: every
        image not ended yet ends with it, and ``rejection`` keeps the message.
        """
        if attributes.get("job_id") != self.job_id:
            return
        status = Status(attributes["status"])
        image_id = attributes.get("image_id", "")
        if status is Status.IN_PROGRESS and "tiles_done" not in attributes:
            # Waiting for endpoint capacity, an output retried, a region redone: say so.
            self.notes.append(message.split(": ", 1)[-1] if ": " in message else message)
        if not image_id:
            if status.terminal:
                self.rejection = message
                for url in self.image_urls:
                    image = self.images.setdefault(url, ImageProgress())
                    image.status = image.status or status
            return
        url = image_id.removeprefix(f"{self.job_id}:")
        if url not in self.image_urls:
            return
        image = self.images.setdefault(url, ImageProgress())
        region = attributes.get("region_id")
        if status is Status.STARTED and "tile_count" in attributes:
            image.tile_count = int(attributes["tile_count"])
        elif status is Status.IN_PROGRESS and region and "tiles_done" in attributes:
            done = int(attributes["tiles_done"])
            image.region_done[region] = max(done, image.region_done.get(region, 0))
            image.region_total[region] = int(attributes.get("tile_count", done))
        elif status.terminal and not region:
            image.status = status

    @property
    def finished(self) -> bool:
        """Whether every image of the job has a terminal status."""
        return all(
            (p := self.images.get(url)) is not None and p.status is not None
            for url in self.image_urls
        )

    def line(self) -> str:
        """A one-line progress bar: ``[####----]  40% 120/300 tiles, 1/2 images ended``."""
        done = sum(p.tiles_done for p in self.images.values())
        totals = [p.total for p in self.images.values()]
        total = sum(t for t in totals if t)
        ended = sum(1 for p in self.images.values() if p.status is not None)
        fraction = min(done / total, 1.0) if total else 0.0
        filled = round(fraction * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return (
            f"[{bar}] {fraction:4.0%} {done}/{total or '?'} tiles,"
            f" {ended}/{len(self.image_urls)} images ended"
        )


@dataclass(frozen=True)
class StatusSubscription:
    """A queue subscribed to the status topic for one job."""

    queue_url: str
    subscription_arn: str


@contextmanager
def subscribe(
    sqs: SQSClient, sns: SNSClient, topic_arn: str, job_id: str
) -> Iterator[StatusSubscription]:
    """A temporary queue receiving the job's status messages; removed on exit."""
    name = f"modelrunner-follow-{uuid.uuid4().hex[:16]}"
    queue_url = sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "3600"})[
        "QueueUrl"
    ]
    subscription_arn = ""
    try:
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
        subscription_arn = sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={
                "RawMessageDelivery": "true",
                "FilterPolicy": json.dumps({"job_id": [job_id]}),
            },
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        yield StatusSubscription(queue_url, subscription_arn)
    finally:
        if subscription_arn:
            sns.unsubscribe(SubscriptionArn=subscription_arn)
        sqs.delete_queue(QueueUrl=queue_url)


def follow(
    sqs: SQSClient,
    subscription: StatusSubscription,
    progress: JobProgress,
    timeout_s: float,
    show: Callable[[str], None],
    wait_s: int = 2,
    note: Callable[[str], None] | None = None,
) -> JobProgress:
    """Read status messages until every image has ended, showing each new progress line, and
    through ``note`` what the worker says besides progress (and a word after a long silence).

    Raises:
        TimeoutError: If the images have not all ended after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    shown = ""
    heard = time.monotonic()
    noted = 0
    while not progress.finished:
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(f"job {progress.job_id} not finished after {timeout_s:.0f}s")
        if note is not None and now - heard >= SILENCE_NOTE_S:
            note(f"no word from the worker for {now - heard:.0f}s; still waiting")
            heard = now
        reply = sqs.receive_message(
            QueueUrl=subscription.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_s,
            MessageAttributeNames=["All"],
        )
        if reply.get("Messages"):
            heard = time.monotonic()
        for message in reply.get("Messages", []):
            attributes = {
                name: value.get("StringValue", "")
                for name, value in message.get("MessageAttributes", {}).items()
            }
            progress.update(attributes, message.get("Body", ""))
            sqs.delete_message(
                QueueUrl=subscription.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
        if note is not None:
            for text in progress.notes[noted:]:
                note(text)
            noted = len(progress.notes)
        line = progress.line()
        if line != shown:
            show(line)
            shown = line
    return progress
