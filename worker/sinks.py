"""Outputs: the FeatureCollection of an image to S3 and as records to Kinesis."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import SinkError

if TYPE_CHECKING:
    from types_aiobotocore_kinesis.client import KinesisClient
    from types_aiobotocore_kinesis.type_defs import PutRecordsRequestEntryTypeDef
    from types_aiobotocore_s3.client import S3Client

log = logging.getLogger(__name__)

KINESIS_MAX_RECORD_BYTES = 1024 * 1024
KINESIS_MAX_REQUEST_BYTES = 5 * 1024 * 1024
KINESIS_MAX_REQUEST_RECORDS = 500
KINESIS_ATTEMPTS = 5


class Sink(Protocol):
    """Somewhere the features of an image are written."""

    async def write(self, job_id: str, output_name: str, features: list[dict[str, Any]]) -> str:
        """Write the features; return where they went (for the job record)."""
        ...


def _collection_bytes(features: list[dict[str, Any]]) -> bytes:
    document = {"type": "FeatureCollection", "features": features}
    return json.dumps(document, separators=(",", ":")).encode()


class S3Sink:
    """One FeatureCollection object per image at ``s3://bucket/prefix/<output_name>``."""

    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        """Write through ``client`` under ``bucket``/``prefix``."""
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, output_name: str) -> str:
        """The object key of an output."""
        return f"{self.prefix}/{output_name}" if self.prefix else output_name

    async def write(self, job_id: str, output_name: str, features: list[dict[str, Any]]) -> str:
        """Put the FeatureCollection object.

        Raises:
            SinkError: If S3 refuses the object.
        """
        key = self.key(output_name)
        try:
            await self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=_collection_bytes(features),
                ContentType="application/geo+json",
            )
        except (BotoCoreError, ClientError) as err:
            raise SinkError(f"S3 output s3://{self.bucket}/{key} failed: {err}") from err
        log.info(
            "job %s: %d features written to s3://%s/%s", job_id, len(features), self.bucket, key
        )
        return f"s3://{self.bucket}/{key}"


def kinesis_records(features: list[dict[str, Any]], batch_size: int) -> Iterator[bytes]:
    """FeatureCollections of at most ``batch_size`` features and at most 1 MiB each.

    Raises:
        SinkError: If a single feature is larger than a Kinesis record can hold.
    """
    for start in range(0, len(features), batch_size):
        yield from _split_to_fit(features[start : start + batch_size])


def _split_to_fit(batch: list[dict[str, Any]]) -> Iterator[bytes]:
    data = _collection_bytes(batch)
    if len(data) <= KINESIS_MAX_RECORD_BYTES:
        yield data
        return
    if len(batch) == 1:
        raise SinkError(f"a feature of {len(data)} bytes exceeds the 1 MiB Kinesis record limit")
    half = len(batch) // 2
    yield from _split_to_fit(batch[:half])
    yield from _split_to_fit(batch[half:])


class KinesisSink:
    """FeatureCollection records on a stream, PartitionKey = jobId."""

    def __init__(self, client: KinesisClient, stream: str, batch_size: int) -> None:
        """Put records through ``client`` on ``stream``, ``batch_size`` features per record."""
        self._client = client
        self.stream = stream
        self.batch_size = batch_size

    async def write(self, job_id: str, output_name: str, features: list[dict[str, Any]]) -> str:
        """Put all records, retrying those Kinesis reports as failed.

        Raises:
            SinkError: If records still fail after retries.
        """
        del output_name
        request: list[PutRecordsRequestEntryTypeDef] = []
        request_bytes = 0
        for data in kinesis_records(features, self.batch_size):
            full = len(request) == KINESIS_MAX_REQUEST_RECORDS
            if full or request_bytes + len(data) > KINESIS_MAX_REQUEST_BYTES:
                await self._put(request)
                request, request_bytes = [], 0
            request.append({"Data": data, "PartitionKey": job_id})
            request_bytes += len(data) + len(job_id)
        if request:
            await self._put(request)
        log.info("job %s: %d features put on stream %s", job_id, len(features), self.stream)
        return f"kinesis://{self.stream}"

    async def _put(self, records: list[PutRecordsRequestEntryTypeDef]) -> None:
        pending = records
        for attempt in range(KINESIS_ATTEMPTS):
            try:
                reply = await self._client.put_records(StreamName=self.stream, Records=pending)
            except (BotoCoreError, ClientError) as err:
                raise SinkError(f"Kinesis output {self.stream} failed: {err}") from err
            if not reply.get("FailedRecordCount"):
                return
            pending = [
                record
                for record, result in zip(pending, reply["Records"], strict=True)
                if "ErrorCode" in result
            ]
            await asyncio.sleep(0.1 * 2**attempt)
        raise SinkError(f"Kinesis output {self.stream}: {len(pending)} records kept failing")
