"""Ranged GETs of S3 objects: the read-ahead's source of bytes (:class:`worker.ports.ObjectSource`).
Counts GETs and bytes."""

from __future__ import annotations

import asyncio
import mmap
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from botocore.exceptions import BotoCoreError, ClientError

from tiling.gdalenv import ReadCredentials

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

FETCH_ATTEMPTS = 3
BODY_CHUNK_BYTES = 1 << 20

Bytes = npt.NDArray[np.uint8]


@dataclass
class S3Ranges:
    """Ranged GETs of one S3 object through an aiobotocore client; counts GETs and bytes."""

    client: S3Client
    bucket: str
    key: str
    gets: int = 0
    bytes_read: int = 0

    async def size(self) -> int:
        """The object's length (a HEAD request).

        Raises:
            OSError: If the object cannot be found or read.
        """
        try:
            reply = await self.client.head_object(Bucket=self.bucket, Key=self.key)
        except (ClientError, BotoCoreError) as err:
            raise OSError(f"s3://{self.bucket}/{self.key}: {err}") from err
        return int(reply["ContentLength"])

    async def fetch(self, start: int, end: int) -> Bytes:
        """Bytes ``start`` to ``end`` (exclusive), retried on a broken transfer.

        The body is copied into one buffer as it arrives: joining a list of chunks at the end
        would hold every byte twice for a moment.

        Raises:
            OSError: If they cannot be had.
        """
        for attempt in range(FETCH_ATTEMPTS):
            self.gets += 1
            try:
                return await self._fetch_once(start, end)
            except (ClientError, BotoCoreError, OSError, asyncio.IncompleteReadError) as err:
                if attempt + 1 >= FETCH_ATTEMPTS:
                    raise OSError(f"s3://{self.bucket}/{self.key} {start}-{end}: {err}") from err
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def _fetch_once(self, start: int, end: int) -> Bytes:
        reply = await self.client.get_object(
            Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end - 1}"
        )
        # Anonymous memory of its own: given back to the system as soon as the read is dropped
        # (buffers of several MiB freed into the heap stayed in the worker's RSS).
        length = int(reply["ContentLength"])
        buffer = np.frombuffer(mmap.mmap(-1, max(1, length)), np.uint8)[:length]
        filled = 0
        async with reply["Body"] as body:
            async for chunk in body.iter_chunks(BODY_CHUNK_BYTES):
                size = len(chunk)
                if filled + size > buffer.size:
                    raise OSError("the reply is longer than its Content-Length")
                buffer[filled : filled + size] = np.frombuffer(chunk, np.uint8)
                filled += size
        if filled != buffer.size:
            raise OSError(f"got {filled} of {buffer.size} bytes")
        self.bytes_read += filled
        return buffer


# ``AioSession.create_client`` bound to S3: (**keys) -> async context manager of a client.
ClientMaker = Callable[..., AbstractAsyncContextManager[Any]]


class S3Objects:
    """Opens S3 objects for ranged reads, under the worker's keys or an image's own."""

    def __init__(self, s3: S3Client, make_client: ClientMaker) -> None:
        """Read with ``s3`` (the worker's keys) or a client ``make_client(**keys)`` builds."""
        self._s3 = s3
        self._make_client = make_client

    @asynccontextmanager
    async def open(self, url: str, credentials: ReadCredentials | None) -> AsyncIterator[S3Ranges]:
        """Ranged reads of ``s3://bucket/key`` (a client of its own under ``credentials``)."""
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if credentials is None:
            yield S3Ranges(self._s3, bucket, key)
            return
        keys = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
            "aws_session_token": credentials.session_token,
        }
        async with self._make_client(**keys) as client:
            yield S3Ranges(client, bucket, key)
