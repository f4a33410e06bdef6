"""Staged regions: one S3 object per finished region, until the image is finalised.

The key is derived from job, image, run and region, so a region done twice overwrites its object
instead of adding a second copy, and a late region of an earlier run of the image (see
:mod:`worker.jobstore`) never lands among the regions of the current one. Objects are
``numpy.savez`` archives of plain arrays (the detection columns and the failed tiles as JSON);
nothing is pickled.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import zipfile
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import numpy as np
from botocore.exceptions import ClientError

from postprocessing.table import DetectionTable, table_arrays, table_from_arrays
from tiling.grid import Window
from worker.errors import RetryableError

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FailedTile:
    """A tile that failed after its retries, and why."""

    window: Window
    reason: str

    def describe(self) -> str:
        """``row,col widthxheight: reason`` (pixel offsets in the full image)."""
        w = self.window
        return f"{w.row_off},{w.col_off} {w.width}x{w.height}: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        """The tile as a JSON object."""
        w = self.window
        return {
            "row": w.row_off,
            "col": w.col_off,
            "width": w.width,
            "height": w.height,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class StagedRegion:
    """What a finished region hands to the finaliser."""

    table: DetectionTable
    tile_count: int
    failed_tiles: tuple[FailedTile, ...] = ()
    lost_tiles: int = 0

    @property
    def failed_count(self) -> int:
        """Tiles of the region without results: failed ones, and those of a lost region
        (one given up before its tiles were known)."""
        return len(self.failed_tiles) + self.lost_tiles


class StagingMissingError(RetryableError):
    """A region recorded as finished has no staged object (yet)."""


class StagingCorruptError(RetryableError):
    """A staged object cannot be read back."""


def encode_region(staged: StagedRegion) -> io.BytesIO:
    """The staged region as an in-memory file, at its start (runs on the thread pool)."""
    meta = {
        "tile_count": staged.tile_count,
        "lost_tiles": staged.lost_tiles,
        "failed_tiles": [t.as_json() for t in staged.failed_tiles],
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        **table_arrays(staged.table),
    }
    buffer = io.BytesIO()
    save: Any = np.savez  # its stubs type **arrays as its own keyword options
    save(buffer, **arrays)
    buffer.seek(0)
    return buffer


def decode_region(data: bytes) -> StagedRegion:
    """The region :func:`encode_region` wrote.

    Raises:
        StagingCorruptError: If the bytes are not a staged region.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
            table = table_from_arrays(arrays)
        failed = tuple(
            FailedTile(Window(t["col"], t["row"], t["width"], t["height"]), t["reason"])
            for t in meta["failed_tiles"]
        )
        return StagedRegion(table, int(meta["tile_count"]), failed, int(meta["lost_tiles"]))
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise StagingCorruptError(f"staged region unreadable: {err}") from err


class Staging(Protocol):
    """Where finished regions wait for their image's finalisation."""

    async def put(
        self, job_id: str, image_index: int, region_id: int, staged: StagedRegion, run: int = 1
    ) -> None:
        """Store (or overwrite) a region's result."""
        ...

    async def get(
        self, job_id: str, image_index: int, region_id: int, run: int = 1
    ) -> StagedRegion:
        """Read a region's result."""
        ...

    async def exists(self, job_id: str, image_index: int, region_id: int, run: int = 1) -> bool:
        """Whether a region's result is stored."""
        ...

    async def delete(
        self, job_id: str, image_index: int, region_ids: list[int], run: int = 1
    ) -> None:
        """Remove the staged results of an image."""
        ...


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
