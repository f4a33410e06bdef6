"""Staged regions in S3: one object per finished region, until the image is finalised.

The key is derived from job, image, run and region, so a region done twice overwrites its object
instead of adding a second copy. S3 errors become the service's own (:mod:`worker.errors`).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import TYPE_CHECKING
from urllib.parse import quote

from botocore.exceptions import ClientError

from worker.adapters.aws_errors import aws_errors
from worker.staging import StagedRegion, StagingMissingError, decode_region, encode_region

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client


@aws_errors("S3 staging")
class S3Staging:
    """Staged regions under ``s3://<bucket>/<prefix>/<jobId>/<image>/region-<n>.npz`` for an
    image's first run, ``.../<image>/run-<r>/region-<n>.npz`` for its later runs."""

    def __init__(self, client: S3Client, bucket: str, prefix: str, executor: Executor) -> None:
        """Write with ``client``; (de)serialise on ``executor``."""
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._executor = executor

    def key(self, job_id: str, image_index: int, region_id: int, run: int = 1) -> str:
        """The object key of a region (the job id is quoted: it may hold any character).

        Run 1 keeps the key regions had before runs were counted.
        """
        image = f"{self._prefix}/{quote(job_id, safe='')}/{image_index}"
        if run > 1:
            image += f"/run-{run}"
        return f"{image}/region-{region_id}.npz"

    async def put(
        self, job_id: str, image_index: int, region_id: int, staged: StagedRegion, run: int = 1
    ) -> None:
        """Store (or overwrite) a region's result."""
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._executor, encode_region, staged)
        await self._client.put_object(
            Bucket=self._bucket, Key=self.key(job_id, image_index, region_id, run), Body=body
        )

    async def get(
        self, job_id: str, image_index: int, region_id: int, run: int = 1
    ) -> StagedRegion:
        """Read a region's result."""
        key = self.key(job_id, image_index, region_id, run)
        try:
            reply = await self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise StagingMissingError(f"region {region_id} is not staged at {key}") from err
            raise
        async with reply["Body"] as stream:
            data = await stream.read()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, decode_region, data)

    async def exists(self, job_id: str, image_index: int, region_id: int, run: int = 1) -> bool:
        """Whether a region's result is stored."""
        try:
            await self._client.head_object(
                Bucket=self._bucket, Key=self.key(job_id, image_index, region_id, run)
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise
        return True

    async def delete(
        self, job_id: str, image_index: int, region_ids: list[int], run: int = 1
    ) -> None:
        """Remove the staged results of an image (1000 keys per request)."""
        keys = [self.key(job_id, image_index, r, run) for r in region_ids]
        for start in range(0, len(keys), 1000):
            await self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True},
            )
