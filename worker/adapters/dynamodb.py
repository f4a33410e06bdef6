"""Image records in DynamoDB: one item per image, keyed by ``image_id`` (``<jobId>:<imageUrl>``).

The record is what makes distributed work safe to repeat:

* ``regions_done`` is a number set: recording a region twice (a redelivered region) changes
  nothing, so completion is counted exactly.
* ``lease_owner``/``lease_until`` is the finaliser's claim: one worker at a time may finalise
  an image; a claim that is not renewed expires and another worker may take over.
* ``final_status`` is written once, conditionally, by the lease holder; ``published`` records
  that the terminal status went out, so a finaliser that dies in between is completed by the
  next one without publishing twice.
* ``run``/``submission_id``: a request for an image that already ended, from a new submission
  (another SQS message id), replaces the record with a fresh one of the next run, in one
  conditional put (only if the record has ended, is still on the run read, and came from
  another submission), so two workers given that request do not both start it again.
  Regions and publication are recorded for one run only: those of an earlier run are refused.

The item's fields are listed in :mod:`worker.contract.records`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from worker.adapters.aws_errors import aws_errors
from worker.contract.records import (
    PROGRESS_PREFIX,
    ImageOutcome,
    ImageRecord,
    RunPlan,
    duration_items,
    failed_tile_items,
    record_of,
)
from worker.contract.records import n_value as _n
from worker.contract.records import s_value as _s
from worker.contract.status import Status
from worker.errors import RetryableError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400
RESTART_ATTEMPTS = 3
# Replace an ended record with the next run: only if it has ended, is still on the run that was
# read, and was not started by this submission (records written before runs existed included).
RESTART_CONDITION = (
    "attribute_exists(final_status) AND (attribute_not_exists(#run) OR #run = :run)"
    " AND (attribute_not_exists(submission_id) OR submission_id <> :sid)"
)
SAME_RUN = "(attribute_not_exists(#run) OR #run = :run)"
UNFINISHED = "1"  # the one key value of the sparse unfinished-index


def _conditional_failed(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


@aws_errors("DynamoDB")
class DynamoJobStore:
    """A DynamoDB table with hash key ``image_id`` and a TTL attribute ``expire_time``."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        ttl_days: int,
        endpoint_index: str = "active_endpoint-index",
        unfinished_index: str = "unfinished-index",
    ) -> None:
        """Write to ``table`` through ``client``; items expire after ``ttl_days``."""
        self._client = client
        self._table = table
        self._ttl_s = ttl_days * SECONDS_PER_DAY
        self._endpoint_index = endpoint_index
        self._unfinished_index = unfinished_index

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

    async def stalled(self, now: float) -> list[tuple[str, str]]:
        """(job id, image URL) of the unfinished images whose finalisation lease expired
        before ``now``: a query of the sparse ``unfinished-index``, whose cost follows the
        number of images being finalised, not the table size."""
        found: list[tuple[str, str]] = []
        paginator = self._client.get_paginator("query")
        async for page in paginator.paginate(
            TableName=self._table,
            IndexName=self._unfinished_index,
            KeyConditionExpression="unfinished = :u AND lease_until < :now",
            ExpressionAttributeValues={":u": _s(UNFINISHED), ":now": _n(round(now, 3))},
            ProjectionExpression="job_id, image_url",
        ):
            found += [(i["job_id"]["S"], i["image_url"]["S"]) for i in page.get("Items", [])]
        return found

    @staticmethod
    def _key(job_id: str, image_url: str) -> dict[str, AttributeValueTypeDef]:
        return {"image_id": _s(f"{job_id}:{image_url}")}

    def _item(
        self, job_id: str, image_url: str, plan: RunPlan, run: int
    ) -> dict[str, AttributeValueTypeDef]:
        """A fresh record of ``run``: started now, no region done, no outcome."""
        now = time.time()
        item: dict[str, AttributeValueTypeDef] = {
            **self._key(job_id, image_url),
            "job_id": _s(job_id),
            "image_url": _s(image_url),
            "status": _s(Status.IN_PROGRESS.value),
            "run": _n(run),
            "region_count": _n(plan.region_count),
            "tile_count": _n(plan.tile_count),
            "start_time": _n(round(now, 3)),
            "deadline": _n(round(now + plan.deadline_s, 3)),
            "expire_time": _n(int(now + self._ttl_s)),
            "unfinished": _s(UNFINISHED),
        }
        if plan.submission_id:
            item["submission_id"] = _s(plan.submission_id)
        if plan.job_name:
            item["job_name"] = _s(plan.job_name)
        if plan.request_body:
            item["request"] = _s(plan.request_body)
            item["image_index"] = _n(plan.image_index)
        if plan.endpoint and plan.load > 0:
            item["active_endpoint"] = _s(plan.endpoint)
            item["endpoint_load"] = _n(plan.load)
        return item

    async def _put(
        self,
        item: dict[str, AttributeValueTypeDef],
        condition: str,
        values: dict[str, AttributeValueTypeDef] | None = None,
    ) -> bool:
        """Put ``item`` if ``condition`` holds; False if it does not."""
        extra: dict[str, Any] = {}
        if values:
            extra = {
                "ExpressionAttributeNames": {"#run": "run"},
                "ExpressionAttributeValues": values,
            }
        try:
            await self._client.put_item(
                TableName=self._table, Item=item, ConditionExpression=condition, **extra
            )
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise
        return True

    async def open_image(self, job_id: str, image_url: str, plan: RunPlan) -> ImageRecord:
        """Create the image's record, or return the one a previous delivery made; start the
        next run of an ended image for a new submission.

        Raises:
            RetryableError: If the record keeps changing (or vanishes) while it is read.
        """
        item = self._item(job_id, image_url, plan, run=1)
        if await self._put(item, "attribute_not_exists(image_id)"):
            return record_of(item, created=True)
        for _ in range(RESTART_ATTEMPTS):
            existing = await self.get(job_id, image_url)
            if existing is None:
                break
            if (
                existing.final_status is None
                or not plan.submission_id
                or existing.redelivered(plan.submission_id)
            ):
                return existing
            item = self._item(job_id, image_url, plan, run=existing.run + 1)
            values = {":run": _n(existing.run), ":sid": _s(plan.submission_id)}
            if await self._put(item, RESTART_CONDITION, values):
                log.info(
                    "job %s image %s ended %s in run %d: run %d for submission %s",
                    job_id,
                    image_url,
                    existing.final_status,
                    existing.run,
                    existing.run + 1,
                    plan.submission_id,
                )
                return record_of(item, created=True)
        raise RetryableError(f"job {job_id} image {image_url}: its record changed while opened")

    async def get(self, job_id: str, image_url: str) -> ImageRecord | None:
        """The image's record, None if there is none."""
        reply = await self._client.get_item(
            TableName=self._table, Key=self._key(job_id, image_url), ConsistentRead=True
        )
        item = reply.get("Item")
        return record_of(dict(item)) if item else None

    async def _update(
        self, job_id: str, image_url: str, **request: Any
    ) -> dict[str, AttributeValueTypeDef] | None:
        """``update_item`` on the image's item; None if its condition did not hold."""
        try:
            reply = await self._client.update_item(
                TableName=self._table, Key=self._key(job_id, image_url), **request
            )
        except ClientError as err:
            if _conditional_failed(err):
                return None
            raise
        return dict(reply.get("Attributes", {}))

    async def region_done(
        self, job_id: str, image_url: str, region_id: int, run: int
    ) -> ImageRecord | None:
        """Add ``region_id`` of ``run`` to the finished regions; return the record after the
        change, or None if the image is no longer on ``run`` (or has no record)."""
        item = await self._update(
            job_id,
            image_url,
            UpdateExpression="ADD regions_done :r",
            ConditionExpression=f"attribute_exists(image_id) AND {SAME_RUN}",
            ExpressionAttributeNames={"#run": "run"},
            ExpressionAttributeValues={":r": {"NS": [str(region_id)]}, ":run": _n(run)},
            ReturnValues="ALL_NEW",
        )
        return None if item is None else record_of(item)

    async def claim(self, job_id: str, image_url: str, owner: str, lease_s: float) -> bool:
        """Take (or renew) the right to finalise; False if another worker holds it."""
        now = time.time()
        updated = await self._update(
            job_id,
            image_url,
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
        return updated is not None

    async def finish(self, job_id: str, image_url: str, owner: str, outcome: ImageOutcome) -> bool:
        """Record the terminal outcome once; False if it was already recorded or not ours."""
        fields: dict[str, AttributeValueTypeDef] = {
            "final_status": _s(outcome.status.value),
            "tile_count": _n(outcome.tile_count),
            "failed_tiles": _n(outcome.failed_tiles),
            **failed_tile_items(outcome.failed_tile_list),
            "feature_count": _n(outcome.feature_count),
            **duration_items(outcome.duration_s),
            "end_time": _n(round(time.time(), 3)),
            "reason": _s(outcome.reason),
            "outputs": {"L": [_s(o) for o in outcome.outputs]},
        }
        values = {f":{name}": value for name, value in fields.items()}
        assignments = ", ".join(f"{name} = :{name}" for name in fields)
        updated = await self._update(
            job_id,
            image_url,
            UpdateExpression=f"SET #s = :final_status, {assignments} REMOVE active_endpoint",
            ConditionExpression="attribute_not_exists(final_status) AND lease_owner = :me",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={**values, ":me": _s(owner)},
        )
        return updated is not None

    async def mark_published(self, job_id: str, image_url: str, run: int) -> None:
        """Record that the terminal status of ``run`` was published (nothing if the image is
        on another run now)."""
        await self._same_run(job_id, image_url, run, "SET published = :t", {":t": {"BOOL": True}})

    async def mark_cleaned(self, job_id: str, image_url: str, run: int) -> None:
        """Record that ``run`` is over: published and its staged regions deleted (the image
        leaves the ``unfinished-index``)."""
        await self._same_run(job_id, image_url, run, "REMOVE unfinished", {})

    async def advance_output(
        self, job_id: str, image_url: str, owner: str, output: str, count: int
    ) -> bool:
        """Record that ``output`` acknowledged its first ``count`` features; False if
        ``owner`` no longer holds the lease (or the outcome is recorded already)."""
        updated = await self._update(
            job_id,
            image_url,
            UpdateExpression="SET #o = :n",
            ConditionExpression="lease_owner = :me AND attribute_not_exists(final_status)",
            ExpressionAttributeNames={"#o": f"{PROGRESS_PREFIX}{output}"},
            ExpressionAttributeValues={":n": _n(count), ":me": _s(owner)},
        )
        return updated is not None

    async def _same_run(
        self,
        job_id: str,
        image_url: str,
        run: int,
        update: str,
        values: dict[str, AttributeValueTypeDef],
    ) -> None:
        """Apply ``update`` if the image is still on ``run``."""
        updated = await self._update(
            job_id,
            image_url,
            UpdateExpression=update,
            ConditionExpression=SAME_RUN,
            ExpressionAttributeNames={"#run": "run"},
            ExpressionAttributeValues={**values, ":run": _n(run)},
        )
        if updated is None:
            log.info("job %s image %s: now past run %d, not updated", job_id, image_url, run)
