"""Read-ahead of a region's source bytes from S3: few large ranged GETs, each byte fetched once.

GDAL reading an ``s3://`` image through /vsis3 issues a ranged GET per window (or per block
run), one at a time per handle, and two encoder handles fetch the blocks they share twice. On
S3 every GET costs 20 to 100 ms of first-byte latency and a request charge; on the local
stack's emulator every GET of a large object costs about 185 ms whatever its size. So a
region's reads are planned instead (:mod:`tiling.byteranges`): GDAL's own block index says
where the blocks under the region's tiles are, they are coalesced into reads of about
``read_range_mb`` cut at block boundaries, and those are fetched in the order the encoders
will need them, ``read_requests`` at a time, while the bytes held stay under
``read_ahead_mb``. GDAL then decodes the tiles from memory (:mod:`tiling.vsiplugin`), and a
read is dropped as soon as the last tile that needs it has been read.

Reads GDAL makes outside the plan (the header, anything unexpected) are served from aligned
chunks fetched on demand and kept in a small LRU. An image whose driver does not say where its
blocks are (NITF) is read entirely that way, with larger chunks and the next chunk fetched
ahead of a reader moving forward through the file. Every GET and byte is counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tiling.blockmap import plan_window_reads
from tiling.byteranges import ReadPlan, interleave
from tiling.gdalenv import ReadCredentials
from tiling.grid import Window
from tiling.vsiplugin import serving
from worker.metrics import tile_stats
from worker.ports import ObjectRanges, ObjectSource
from worker.prefetch import ByteBudget, RegionReads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadAheadSettings:
    """How much to read ahead and how."""

    range_bytes: int
    budget_bytes: int
    requests: int
    wait_s: float


@dataclass
class RegionSource:
    """A region's reads in progress: the GDAL path to open and what was fetched."""

    path: str
    reads: RegionReads
    ranges: ObjectRanges
    plan: ReadPlan | None

    @property
    def planned_bytes(self) -> int:
        """Bytes the plan reads (0 without a plan)."""
        return self.plan.total_bytes if self.plan is not None else 0


def _need_order(bands: Sequence[Sequence[Window]]) -> list[Window]:
    """The tiles of encoders reading their bands side by side, in the order they are needed."""
    flat = [w for band in bands for w in band]
    starts = [sum(len(b) for b in bands[:i]) for i in range(len(bands))]
    lanes = [range(start, start + len(band)) for start, band in zip(starts, bands, strict=True)]
    return [flat[i] for i in interleave(lanes)]


def report_reads(job_id: str, url: str, source: RegionSource, tiles: int, image_bytes: int) -> None:
    """Log what a region fetched and add it to the region's tile statistics."""
    ranges = source.ranges
    log.info(
        "job %s image %s: %d tiles read in %d S3 GETs, %.1f MiB (%.2f of the image's %.1f MiB;"
        " %s; %d refetched)",
        job_id,
        url,
        tiles,
        ranges.gets,
        ranges.bytes_read / 2**20,
        ranges.bytes_read / max(1, image_bytes),
        image_bytes / 2**20,
        "planned" if source.plan is not None else "chunked, no block index",
        source.reads.refetches,
    )
    if (stats := tile_stats()) is not None:
        stats.s3_gets += ranges.gets
        stats.s3_bytes_read += ranges.bytes_read


class ReadAhead:
    """Builds a region's read-ahead for an image, under its read credentials."""

    def __init__(self, objects: ObjectSource, settings: ReadAheadSettings) -> None:
        """Read the images' bytes through ``objects``."""
        self._objects = objects
        self._settings = settings
        self._budget = ByteBudget(settings.budget_bytes)

    @asynccontextmanager
    async def region(
        self,
        url: str,
        credentials: ReadCredentials | None,
        bands: Sequence[Sequence[Window]],
        run_in_thread: Callable[..., Any],
    ) -> AsyncIterator[RegionSource]:
        """Plan and start fetching the bytes under ``bands`` (the encoders' tiles) of ``url``.

        Raises:
            OSError: If the object cannot be read.
        """
        key = url.removeprefix("s3://").partition("/")[2]
        async with (
            self._objects.open(url, credentials) as ranges,
            self._open(ranges, key, bands, run_in_thread) as source,
        ):
            yield source

    @asynccontextmanager
    async def _open(
        self,
        ranges: ObjectRanges,
        key: str,
        bands: Sequence[Sequence[Window]],
        run_in_thread: Callable[..., Any],
    ) -> AsyncIterator[RegionSource]:
        settings = self._settings
        size = await ranges.size()
        reads = RegionReads(
            ranges,
            size,
            asyncio.get_running_loop(),
            self._budget,
            settings.requests,
            settings.wait_s,
        )
        try:
            with serving(reads, key) as path:
                tiles = _need_order(bands)
                plan = await run_in_thread(plan_window_reads, path, tiles, settings.range_bytes)
                reads.follow(plan, tiles)
                yield RegionSource(path, reads, ranges, plan)
        finally:
            await reads.aclose()
