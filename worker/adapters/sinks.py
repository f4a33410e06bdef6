"""Outputs: an image's features streamed to S3 (multipart) and to Kinesis as they are produced.

Features arrive as GeoJSON Feature texts in chunks; no sink holds a whole image's output.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import SinkError
from worker.ports import OutputProgress, SinkWriter

if TYPE_CHECKING:
    from types_aiobotocore_kinesis.client import KinesisClient
    from types_aiobotocore_kinesis.type_defs import PutRecordsRequestEntryTypeDef
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

COLLECTION_HEAD = b'{"type":"FeatureCollection","features":['
COLLECTION_TAIL = b"]}"
S3_PART_BYTES = 8 * 1024 * 1024
KINESIS_MAX_RECORD_BYTES = 1024 * 1024
KINESIS_MAX_REQUEST_BYTES = 5 * 1024 * 1024
KINESIS_MAX_REQUEST_RECORDS = 500
KINESIS_ATTEMPTS = 5


class S3Sink:
    """One FeatureCollection object per image at ``s3://bucket/prefix/<output_name>``."""

    def __init__(self, client: S3Client, bucket: str, prefix: str, acl: str = "") -> None:
        """Write through ``client`` under ``bucket``/``prefix`` with the canned ``acl``
        ("" for none)."""
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.acl = acl

    def key(self, output_name: str) -> str:
        """The object key of an output."""
        return f"{self.prefix}/{output_name}" if self.prefix else output_name

    async def open(
        self, job_id: str, output_name: str, progress: OutputProgress | None = None
    ) -> SinkWriter:
        """Start the object; it is uploaded in parts once it outgrows one part. An object is
        written whole or not at all, so it is written again whatever ``progress`` says."""
        del job_id, progress
        return S3Writer(self._client, self.bucket, self.key(output_name), acl=self.acl)


class S3Writer:
    """A FeatureCollection object written with a multipart upload when large."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        part_bytes: int = S3_PART_BYTES,
        acl: str = "",
    ):
        """Write ``s3://bucket/key`` in parts of ``part_bytes``, with the canned ``acl``."""
        self._client = client
        self.bucket = bucket
        self.key = key
        self._extra: dict[str, Any] = {"ContentType": "application/geo+json"}
        if acl:
            self._extra["ACL"] = acl
        self._part_bytes = part_bytes
        self._buffer = bytearray(COLLECTION_HEAD)
        self._empty = True
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []

    @property
    def location(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"

    async def write(self, features: list[str]) -> None:
        """Append features; upload a part when the buffer is full."""
        for feature in features:
            if not self._empty:
                self._buffer += b","
            self._buffer += feature.encode()
            self._empty = False
        if len(self._buffer) >= self._part_bytes:
            await self._upload_part()

    async def _upload_part(self) -> None:
        try:
            if self._upload_id is None:
                reply = await self._client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, **self._extra
                )
                self._upload_id = reply["UploadId"]
            number = len(self._parts) + 1
            part = await self._client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(self._buffer),
            )
        except (BotoCoreError, ClientError) as err:
            raise SinkError(f"S3 output {self.location} failed: {err}") from err
        self._parts.append({"ETag": part["ETag"], "PartNumber": number})
        self._buffer = bytearray()

    async def close(self) -> str:
        """Complete the object."""
        self._buffer += COLLECTION_TAIL
        try:
            if self._upload_id is None:
                await self._client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer), **self._extra
                )
            else:
                await self._upload_part()
                await self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        except (BotoCoreError, ClientError) as err:
            raise SinkError(f"S3 output {self.location} failed: {err}") from err
        return self.location

    async def abort(self) -> None:
        """Abort a started multipart upload (best effort)."""
        if self._upload_id is not None:
            try:
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
                )
            except (BotoCoreError, ClientError) as err:
                log.warning("could not abort the upload of %s: %s", self.location, err)


class KinesisSink:
    """FeatureCollection records on a stream, PartitionKey = jobId, spread over the shards."""

    def __init__(
        self,
        client: KinesisClient,
        stream: str,
        batch_size: int,
        request_records: int = KINESIS_MAX_REQUEST_RECORDS,
    ) -> None:
        """Put records through ``client`` on ``stream``, ``batch_size`` features per record,
        at most ``request_records`` records per PutRecords call."""
        self._client = client
        self.stream = stream
        self.batch_size = batch_size
        self.request_records = min(request_records, KINESIS_MAX_REQUEST_RECORDS)

    async def open(
        self, job_id: str, output_name: str, progress: OutputProgress | None = None
    ) -> SinkWriter:
        """Look up the shards and start the records of one image, after the features that
        ``progress`` says the stream acknowledged in an earlier attempt."""
        del output_name
        try:
            reply = await self._client.list_shards(StreamName=self.stream)
        except (BotoCoreError, ClientError) as err:
            raise SinkError(f"Kinesis output {self.stream} failed: {err}") from err
        hash_keys = [
            shard["HashKeyRange"]["StartingHashKey"]
            for shard in reply.get("Shards", [])
            if "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {})
        ]
        writer = KinesisWriter(self._client, self.stream, job_id, self.batch_size, hash_keys)
        writer.request_records = self.request_records
        if progress is not None:
            writer.resume(progress)
        return writer


class KinesisWriter:
    """Batches features into records and records into PutRecords calls within AWS limits.

    With an :class:`~worker.ports.OutputProgress`, the count of features the stream has
    acknowledged is recorded after every PutRecords call, and the features an earlier attempt
    had acknowledged are not sent again: a finaliser that dies repeats one call at most.
    """

    def __init__(
        self,
        client: KinesisClient,
        stream: str,
        job_id: str,
        batch_size: int,
        hash_keys: list[str],
    ) -> None:
        """Put records of ``batch_size`` features for ``job_id`` on ``stream``."""
        self._client = client
        self.stream = stream
        self._job_id = job_id
        self._batch_size = batch_size
        self._hash_keys = itertools.cycle(hash_keys) if hash_keys else None
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._request: list[PutRecordsRequestEntryTypeDef] = []
        self._request_bytes = 0
        self.request_records = KINESIS_MAX_REQUEST_RECORDS
        self.skipped = 0
        self._progress: OutputProgress | None = None
        self._seen = 0  # features given to this writer, in output order
        self._acknowledged = 0  # the first features the stream has acknowledged
        self._batch_end = 0  # features up to the last one in the open record
        self._request_end = 0  # features up to the last one in the pending request

    @property
    def output(self) -> str:
        """The output's name in the image's progress."""
        return f"kinesis:{self.stream}"

    def resume(self, progress: OutputProgress) -> None:
        """Record progress in ``progress``; skip what it says was acknowledged."""
        self._progress = progress
        self._acknowledged = progress.acknowledged(self.output)
        if self._acknowledged:
            log.info(
                "job %s: %s acknowledged %d features before: resuming after them",
                self._job_id,
                self.output,
                self._acknowledged,
            )

    async def write(self, features: list[str]) -> None:
        """Add features, sealing records and sending requests as they fill."""
        limit = KINESIS_MAX_RECORD_BYTES - len(COLLECTION_HEAD) - len(COLLECTION_TAIL)
        for text in features:
            self._seen += 1
            if self._seen <= self._acknowledged:
                continue
            data = text.encode()
            if len(data) > limit:
                self.skipped += 1
                log.warning(
                    "job %s: a feature of %d bytes exceeds the 1 MiB Kinesis record limit;"
                    " it is in the S3 output only",
                    self._job_id,
                    len(data),
                )
                continue
            if self._batch and self._batch_bytes + len(data) + 1 > limit:
                await self._seal()
            self._batch.append(data)
            self._batch_bytes += len(data) + 1
            self._batch_end = self._seen
            if len(self._batch) >= self._batch_size:
                await self._seal()

    async def _seal(self) -> None:
        data = COLLECTION_HEAD + b",".join(self._batch) + COLLECTION_TAIL
        self._batch, self._batch_bytes = [], 0
        size = len(data) + len(self._job_id)
        full = len(self._request) >= self.request_records
        if full or self._request_bytes + size > KINESIS_MAX_REQUEST_BYTES:
            await self._put()
        record: PutRecordsRequestEntryTypeDef = {"Data": data, "PartitionKey": self._job_id}
        if self._hash_keys is not None:
            record["ExplicitHashKey"] = next(self._hash_keys)
        self._request.append(record)
        self._request_bytes += size
        self._request_end = self._batch_end

    async def _put(self) -> None:
        pending, self._request, self._request_bytes = self._request, [], 0
        if pending:
            await self._put_all(pending)
        if self._progress is not None and self._request_end > self._acknowledged:
            self._acknowledged = self._request_end
            await self._progress.advance(self.output, self._request_end)

    async def _put_all(self, pending: list[PutRecordsRequestEntryTypeDef]) -> None:
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

    async def close(self) -> str:
        """Send what is left."""
        if self._batch:
            await self._seal()
        await self._put()
        return f"kinesis://{self.stream}"

    async def abort(self) -> None:
        """Records already put stay on the stream; drop the rest."""
        self._batch, self._request = [], []
