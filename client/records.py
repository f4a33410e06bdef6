"""Job records as the command line reads them: views of the service's records
(:class:`worker.contract.records.JobRecordView`), described for people."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.contract.messages import ImageRequest
from worker.contract.records import JobRecordView, view_of

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

SHOWN_FAILED_TILES = 3


@dataclass(frozen=True)
class Submission:
    """A request as sent: its SQS message id (the worker records it as the run's
    ``submission_id``) and when it was sent (epoch seconds, this machine's clock)."""

    message_id: str
    sent_at_s: float


def image_views(dynamodb: DynamoDBClient, table: str, request: ImageRequest) -> list[JobRecordView]:
    """The records of the request's images (missing ones are left out)."""
    views = []
    for url in request.image_urls:
        item = dynamodb.get_item(
            TableName=table, Key={"image_id": {"S": f"{request.job_id}:{url}"}}, ConsistentRead=True
        ).get("Item")
        if item:
            views.append(view_of(dict(item)))
    return views


def job_views(dynamodb: DynamoDBClient, table: str, index: str, job_id: str) -> list[JobRecordView]:
    """Every image record of a job (through the table's job id index), by image URL."""
    views: list[JobRecordView] = []
    paginator = dynamodb.get_paginator("query")
    for page in paginator.paginate(
        TableName=table,
        IndexName=index,
        KeyConditionExpression="job_id = :j",
        ExpressionAttributeValues={":j": {"S": job_id}},
    ):
        views += [view_of(dict(item)) for item in page.get("Items", [])]
    return sorted(views, key=lambda v: v.image_url)


def ended_for(view: JobRecordView, submission: Submission | None) -> bool:
    """Whether the image ended for ``submission``: the run it started, or a run that ended
    after it was sent (the one it joined); not an earlier run of the job."""
    if not view.ended:
        return False
    if submission is None:
        return True
    if view.record.submission_id == submission.message_id:
        return True
    return (view.end_time or 0.0) >= submission.sent_at_s


def counts(view: JobRecordView) -> str:
    """``N tiles (F failed), K features``, as far as they are known."""
    record = view.record
    text = f"{record.tile_count} tiles ({record.failed_tiles} failed)"
    return text + (f", {record.feature_count} features" if view.ended else "")


def summary(view: JobRecordView) -> str:
    """One line: the image, its status, its counts and, if it failed, why."""
    text = f"{view.image_url}: {view.status.value}, {counts(view)}"
    if view.record.reason:
        text += f"; reason: {view.record.reason}"
    return text


def describe(view: JobRecordView) -> str:
    """An image's state for ``modelrunner status``: a line, then the details."""
    record = view.record
    lines = [
        f"{view.image_url}: {view.status.value} (run {record.run}),"
        f" {len(record.regions_done)}/{record.region_count} regions, {counts(view)}"
    ]
    if view.ended:
        lines.append(f"  took {record.duration_s:.1f}s")
    if record.reason:
        lines.append(f"  reason: {record.reason}")
    for tile in record.failed_tile_list[:SHOWN_FAILED_TILES]:
        lines.append(f"  failed tile {tile.describe()}")
    if record.failed_tiles > SHOWN_FAILED_TILES:
        lines.append(f"  ... and {record.failed_tiles - SHOWN_FAILED_TILES} more failed tiles")
    lines += [f"  output: {output}" for output in record.outputs]
    return "\n".join(lines)
