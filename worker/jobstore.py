"""Job records in DynamoDB: one item per image, keyed by ``image_id`` (``<jobId>:<imageUrl>``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from worker.status import Status

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

SECONDS_PER_DAY = 86400


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    """How an image ended: what its job record and terminal status report."""

    status: Status
    tile_count: int = 0
    failed_tiles: int = 0
    feature_count: int = 0
    duration_s: float = 0.0
    reason: str = ""
    outputs: tuple[str, ...] = field(default=())


class JobStore(Protocol):
    """Records the progress of images."""

    async def start(self, job_id: str, image_url: str, job_name: str | None) -> None:
        """Record that an image started."""
        ...

    async def progress(self, job_id: str, image_url: str, tile_count: int, done: int) -> None:
        """Record the tiles done so far."""
        ...

    async def finish(self, job_id: str, image_url: str, outcome: ImageOutcome) -> None:
        """Record the terminal state of an image."""
        ...


def _s(value: str) -> AttributeValueTypeDef:
    return {"S": value}


def _n(value: float) -> AttributeValueTypeDef:
    return {"N": str(value)}


class DynamoJobStore:
    """A DynamoDB table with hash key ``image_id`` and a TTL attribute ``expire_time``."""

    def __init__(self, client: DynamoDBClient, table: str, ttl_days: int) -> None:
        """Write to ``table`` through ``client``; items expire after ``ttl_days``."""
        self._client = client
        self._table = table
        self._ttl_s = ttl_days * SECONDS_PER_DAY

    async def start(self, job_id: str, image_url: str, job_name: str | None) -> None:
        """Create (or reset, on redelivery) the image's record."""
        now = time.time()
        item: dict[str, AttributeValueTypeDef] = {
            "image_id": _s(f"{job_id}:{image_url}"),
            "job_id": _s(job_id),
            "image_url": _s(image_url),
            "status": _s(Status.STARTED.value),
            "start_time": _n(round(now, 3)),
            "expire_time": _n(int(now + self._ttl_s)),
        }
        if job_name:
            item["job_name"] = _s(job_name)
        await self._client.put_item(TableName=self._table, Item=item)

    async def progress(self, job_id: str, image_url: str, tile_count: int, done: int) -> None:
        """Record the tiles done so far."""
        await self._client.update_item(
            TableName=self._table,
            Key={"image_id": _s(f"{job_id}:{image_url}")},
            UpdateExpression="SET #s = :s, tile_count = :t, tiles_done = :d",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":s": _s(Status.IN_PROGRESS.value),
                ":t": _n(tile_count),
                ":d": _n(done),
            },
        )

    async def finish(self, job_id: str, image_url: str, outcome: ImageOutcome) -> None:
        """Record the terminal state of an image."""
        values: dict[str, AttributeValueTypeDef] = {
            ":s": _s(outcome.status.value),
            ":t": _n(outcome.tile_count),
            ":f": _n(outcome.failed_tiles),
            ":c": _n(outcome.feature_count),
            ":p": _n(round(outcome.duration_s, 3)),
            ":e": _n(round(time.time(), 3)),
            ":r": _s(outcome.reason),
            ":o": {"L": [_s(o) for o in outcome.outputs]},
        }
        await self._client.update_item(
            TableName=self._table,
            Key={"image_id": _s(f"{job_id}:{image_url}")},
            UpdateExpression=(
                "SET #s = :s, tile_count = :t, tiles_done = :t, failed_tiles = :f,"
                " feature_count = :c, processing_duration = :p, end_time = :e, reason = :r,"
                " outputs = :o"
            ),
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values,
        )
