"""Image records in DynamoDB: one item per image, keyed by ``image_id`` (``<jobId>:<imageUrl>``).

The record is what makes distributed work safe to repeat:

* ``regions_done`` is a number set: recording a region twice (a redelivered region) changes
  nothing, so completion is counted exactly.
* ``lease_owner``/``lease_until`` is the finaliser's claim: one worker at a time may finalise
  an image; a claim that is not renewed expires and another worker may take over.
* ``final_status`` is written once, conditionally, by the lease holder; ``published`` records
  that the terminal status went out, so a finaliser that dies in between is completed by the
  next one without publishing twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from worker.status import Status

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

SECONDS_PER_DAY = 86400
MAX_RECORDED_FAILED_TILES = 100


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    """How an image ended: what its record and terminal status report."""

    status: Status
    tile_count: int = 0
    failed_tiles: int = 0
    feature_count: int = 0
    duration_s: float = 0.0
    reason: str = ""
    outputs: tuple[str, ...] = field(default=())
    failed_tile_list: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """The state of one image of a job, as stored."""

    region_count: int
    tile_count: int
    start_time: float
    deadline: float
    regions_done: frozenset[int] = frozenset()
    final_status: Status | None = None
    published: bool = False
    reason: str = ""
    failed_tiles: int = 0
    feature_count: int = 0
    duration_s: float = 0.0
    outputs: tuple[str, ...] = ()
    failed_tile_list: tuple[str, ...] = ()
    created: bool = False

    def outcome(self) -> ImageOutcome | None:
        """The recorded terminal outcome, None before there is one."""
        if self.final_status is None:
            return None
        return ImageOutcome(
            status=self.final_status,
            tile_count=self.tile_count,
            failed_tiles=self.failed_tiles,
            feature_count=self.feature_count,
            duration_s=self.duration_s,
            reason=self.reason,
            outputs=self.outputs,
            failed_tile_list=self.failed_tile_list,
        )

    @property
    def complete(self) -> bool:
        """Every region has been recorded."""
        return len(self.regions_done) >= self.region_count

    def past_deadline(self, now: float | None = None) -> bool:
        """The job deadline has passed."""
        return (time.time() if now is None else now) > self.deadline


class JobStore(Protocol):
    """Records images, their regions and their outcome."""

    async def open_image(
        self,
        job_id: str,
        image_url: str,
        job_name: str | None,
        region_count: int,
        tile_count: int,
        deadline_s: float,
        endpoint: str | None = None,
        load: int = 0,
    ) -> ImageRecord:
        """Create the image's record, or return the one a previous delivery made.

        With an ``endpoint`` and a ``load``, the image counts as active on that endpoint (for
        capacity-based throttling) until its outcome is recorded.
        """
        ...

    async def get(self, job_id: str, image_url: str) -> ImageRecord | None:
        """The image's record, None if there is none."""
        ...

    async def region_done(self, job_id: str, image_url: str, region_id: int) -> ImageRecord:
        """Add ``region_id`` to the finished regions; return the record after the change."""
        ...

    async def claim(self, job_id: str, image_url: str, owner: str, lease_s: float) -> bool:
        """Take (or renew) the right to finalise; False if another worker holds it."""
        ...

    async def finish(self, job_id: str, image_url: str, owner: str, outcome: ImageOutcome) -> bool:
        """Record the terminal outcome once; False if it was already recorded or not ours."""
        ...

    async def mark_published(self, job_id: str, image_url: str) -> None:
        """Record that the terminal status was published."""
        ...


def _s(value: str) -> AttributeValueTypeDef:
    return {"S": value}


def _n(value: float) -> AttributeValueTypeDef:
    return {"N": str(value)}


def _conditional_failed(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _strings(value: Any) -> tuple[str, ...]:
    items = value.get("L", []) if isinstance(value, dict) else []
    return tuple(v["S"] for v in items if "S" in v)


def _record(item: dict[str, Any], created: bool = False) -> ImageRecord:
    final = item.get("final_status", {}).get("S")
    return ImageRecord(
        region_count=int(item["region_count"]["N"]),
        tile_count=int(item.get("tile_count", {}).get("N", "0")),
        start_time=float(item["start_time"]["N"]),
        deadline=float(item["deadline"]["N"]),
        regions_done=frozenset(int(v) for v in item.get("regions_done", {}).get("NS", [])),
        final_status=Status(final) if final else None,
        published=bool(item.get("published", {}).get("BOOL", False)),
        reason=item.get("reason", {}).get("S", ""),
        failed_tiles=int(item.get("failed_tiles", {}).get("N", "0")),
        feature_count=int(item.get("feature_count", {}).get("N", "0")),
        duration_s=float(item.get("processing_duration", {}).get("N", "0")),
        outputs=_strings(item.get("outputs")),
        failed_tile_list=_strings(item.get("failed_tile_list")),
        created=created,
    )


class DynamoJobStore:
    """A DynamoDB table with hash key ``image_id`` and a TTL attribute ``expire_time``."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        ttl_days: int,
        endpoint_index: str = "active_endpoint-index",
    ) -> None:
        """Write to ``table`` through ``client``; items expire after ``ttl_days``."""
        self._client = client
        self._table = table
        self._ttl_s = ttl_days * SECONDS_PER_DAY
        self._endpoint_index = endpoint_index

    async def active_load(self, endpoint: str, except_job: str) -> int:
        """Sum of the loads of the images active on ``endpoint`` (other jobs, before deadline).

        Reads the sparse index of ``active_endpoint``: only images that have started and not
        ended are in it, so the cost follows the number of active images, not the table size.
        """
        total = 0
        paginator = self._client.get_paginator("query")
        async for page in paginator.paginate(
            TableName=self._table,
            IndexName=self._endpoint_index,
            KeyConditionExpression="active_endpoint = :e",
            FilterExpression="job_id <> :j AND deadline > :now",
            ExpressionAttributeValues={
                ":e": _s(endpoint),
                ":j": _s(except_job),
                ":now": _n(round(time.time(), 3)),
            },
            ProjectionExpression="endpoint_load",
        ):
            total += sum(int(item["endpoint_load"]["N"]) for item in page.get("Items", []))
        return total

    @staticmethod
    def _key(job_id: str, image_url: str) -> dict[str, AttributeValueTypeDef]:
        return {"image_id": _s(f"{job_id}:{image_url}")}

    async def open_image(
        self,
        job_id: str,
        image_url: str,
        job_name: str | None,
        region_count: int,
        tile_count: int,
        deadline_s: float,
        endpoint: str | None = None,
        load: int = 0,
    ) -> ImageRecord:
        """Create the image's record, or return the one a previous delivery made."""
        now = time.time()
        item: dict[str, AttributeValueTypeDef] = {
            **self._key(job_id, image_url),
            "job_id": _s(job_id),
            "image_url": _s(image_url),
            "status": _s(Status.IN_PROGRESS.value),
            "region_count": _n(region_count),
            "tile_count": _n(tile_count),
            "start_time": _n(round(now, 3)),
            "deadline": _n(round(now + deadline_s, 3)),
            "expire_time": _n(int(now + self._ttl_s)),
        }
        if job_name:
            item["job_name"] = _s(job_name)
        if endpoint and load > 0:
            item["active_endpoint"] = _s(endpoint)
            item["endpoint_load"] = _n(load)
        try:
            await self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(image_id)",
            )
        except ClientError as err:
            if not _conditional_failed(err):
                raise
            existing = await self.get(job_id, image_url)
            if existing is not None:
                return existing
            raise
        return _record(item, created=True)

    async def get(self, job_id: str, image_url: str) -> ImageRecord | None:
        """The image's record, None if there is none."""
        reply = await self._client.get_item(
            TableName=self._table, Key=self._key(job_id, image_url), ConsistentRead=True
        )
        item = reply.get("Item")
        return _record(dict(item)) if item else None

    async def region_done(self, job_id: str, image_url: str, region_id: int) -> ImageRecord:
        """Add ``region_id`` to the finished regions; return the record after the change."""
        reply = await self._client.update_item(
            TableName=self._table,
            Key=self._key(job_id, image_url),
            UpdateExpression="ADD regions_done :r",
            ConditionExpression="attribute_exists(image_id)",
            ExpressionAttributeValues={":r": {"NS": [str(region_id)]}},
            ReturnValues="ALL_NEW",
        )
        return _record(dict(reply["Attributes"]))

    async def claim(self, job_id: str, image_url: str, owner: str, lease_s: float) -> bool:
        """Take (or renew) the right to finalise; False if another worker holds it."""
        now = time.time()
        try:
            await self._client.update_item(
                TableName=self._table,
                Key=self._key(job_id, image_url),
                UpdateExpression="SET lease_owner = :me, lease_until = :until",
                ConditionExpression=(
                    "attribute_exists(image_id) AND (attribute_not_exists(lease_until)"
                    " OR lease_until < :now OR lease_owner = :me)"
                ),
                ExpressionAttributeValues={
                    ":me": _s(owner),
                    ":until": _n(round(now + lease_s, 3)),
                    ":now": _n(round(now, 3)),
                },
            )
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise
        return True

    async def finish(self, job_id: str, image_url: str, owner: str, outcome: ImageOutcome) -> bool:
        """Record the terminal outcome once; False if it was already recorded or not ours."""
        values: dict[str, AttributeValueTypeDef] = {
            ":s": _s(outcome.status.value),
            ":t": _n(outcome.tile_count),
            ":f": _n(outcome.failed_tiles),
            ":l": {"L": [_s(t) for t in outcome.failed_tile_list[:MAX_RECORDED_FAILED_TILES]]},
            ":c": _n(outcome.feature_count),
            ":p": _n(round(outcome.duration_s, 3)),
            ":e": _n(round(time.time(), 3)),
            ":r": _s(outcome.reason),
            ":o": {"L": [_s(o) for o in outcome.outputs]},
            ":me": _s(owner),
        }
        try:
            await self._client.update_item(
                TableName=self._table,
                Key=self._key(job_id, image_url),
                UpdateExpression=(
                    "SET #s = :s, final_status = :s, tile_count = :t, failed_tiles = :f,"
                    " failed_tile_list = :l, feature_count = :c, processing_duration = :p,"
                    " end_time = :e, reason = :r, outputs = :o REMOVE active_endpoint"
                ),
                ConditionExpression="attribute_not_exists(final_status) AND lease_owner = :me",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise
        return True

    async def mark_published(self, job_id: str, image_url: str) -> None:
        """Record that the terminal status was published."""
        await self._client.update_item(
            TableName=self._table,
            Key=self._key(job_id, image_url),
            UpdateExpression="SET published = :t",
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )
