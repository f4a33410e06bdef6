"""The image pipeline: plan an image; run a region (read -> encode -> invoke -> parse/shift);
finalise an image (NMS over all regions -> geolocate -> outputs).

Tiles flow through a bounded number of concurrent tile tasks, so memory holds at most
``endpoint_concurrency`` encoded tiles whatever the image size. Which worker runs which region,
and when an image is finalised, is decided by :mod:`worker.runner` and :mod:`worker.finaliser`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from postprocessing.errors import ModelOutputError
from postprocessing.features import (
    rows_in_region,
)
from postprocessing.table import DetectionTable
from tiling.encode import content_type
from tiling.errors import ImageOpenError, TilingError
from tiling.gdalenv import ReadCredentials
from tiling.grid import Window
from tiling.image import ImageInfo, WindowReader, describe_image
from worker.contract.messages import ImageRequest
from worker.contract.records import FailedTile, ImageOutcome
from worker.errors import EndpointError, ImageUnavailableError
from worker.images import ImageRef
from worker.metrics import tile_stats
from worker.output import FinalSource, finalise_image
from worker.plan import ImagePlan, plan_image
from worker.policy import check_image_size
from worker.ports import EndpointFactory, ModelEndpoint, OutputProgress, SinkFactory
from worker.readahead import ReadAhead, RegionSource, report_reads
from worker.regions import Region, split_regions
from worker.roles import ReadCredentialSource, image_read_credentials
from worker.settings import Settings
from worker.staging import StagedRegion
from worker.tiles import encode_windows, parse_tile_reply

log = logging.getLogger(__name__)

T = TypeVar("T")

# Tiles an encoder reads and encodes per trip to the thread pool, at most ENCODE_BATCH and
# ENCODE_BATCH_BYTES of pixels. A cheap tile (an uncompressed 512 px GTiff) takes about 2 ms,
# of which the hand-back to the event loop would otherwise idle the thread for a tenth; large
# tiles go one by one.
ENCODE_BATCH = 8
ENCODE_BATCH_BYTES = 8 << 20

# Model replies up to this size (a few features) are parsed on the event loop, in well under
# a millisecond; larger ones on the thread pool.
INLINE_REPLY_BYTES = 4096


@dataclass(slots=True)
class TileProgress:
    """Tiles done and failed so far for one image."""

    job_id: str
    total: int
    done: int = 0
    failures: list[FailedTile] = field(default_factory=list)


@dataclass(frozen=True)
class ImageJob:
    """One image of a request, planned: its header, tiles and regions."""

    ref: ImageRef
    info: ImageInfo
    plan: ImagePlan
    regions: list[Region]
    region_px: int
    credentials: ReadCredentials | None = None  # imageReadRole's keys; None: the worker's

    @property
    def request(self) -> ImageRequest:
        """The request the image belongs to."""
        return self.ref.request

    @property
    def index(self) -> int:
        """The image's index in the request."""
        return self.ref.index

    @property
    def url(self) -> str:
        """The image URL."""
        return self.ref.url

    @property
    def job_id(self) -> str:
        """The request's job id."""
        return self.ref.job_id

    @property
    def tile_count(self) -> int:
        """Tiles over all regions."""
        return len(self.plan.tiles)

    def summary(self) -> str:
        """``W x H px, B bands DTYPE; N tiles in R region(s) over BOUNDS``, for the log."""
        info = self.info
        return (
            f"{info.width}x{info.height} px, {info.band_count} bands {info.dtype};"
            f" {self.tile_count} tiles in {len(self.regions)} region(s) over {self.plan.bounds}"
        )

    def region(self, region_id: int) -> Region:
        """Region ``region_id`` (1-based)."""
        return self.regions[region_id - 1]


class ImagePipeline:
    """Plans images, runs their regions through the model, finalises their outputs."""

    def __init__(
        self,
        settings: Settings,
        endpoints: EndpointFactory,
        sinks: SinkFactory,
        executor: Executor,
        read_roles: ReadCredentialSource | None = None,
        read_ahead: ReadAhead | None = None,
        encoders: Executor | None = None,
    ) -> None:
        """Wire the pipeline to its ports; ``read_roles`` serves requests with an
        ``imageReadRole`` (without it such requests fail); ``read_ahead`` fetches the bytes
        of ``s3://`` images ahead of the encoders (without it GDAL reads them itself);
        ``encoders`` reads and encodes tiles (default: ``executor``, which does the rest)."""
        self._settings = settings
        self._endpoints = endpoints
        self._sinks = sinks
        self._executor = executor
        self._encoders = encoders or executor
        self._read_roles = read_roles
        self._read_ahead = read_ahead

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def plan(self, ref: ImageRef, region_px: int | None = None) -> ImageJob:
        """Open an image and plan its tiles and regions (of ``region_px``, by default the
        configured region size).

        Raises:
            ImageUnavailableError: If the image cannot be opened.
            PermanentError: If the request cannot be applied to the image.
        """
        request, url = ref.request, ref.url
        credentials = await image_read_credentials(self._read_roles, request.image_read_role)
        try:
            info = await self._in_thread(describe_image, url, credentials)
        except ImageOpenError as err:
            role = request.image_read_role
            reason = f"{err} (read as imageReadRole {role})" if role else str(err)
            raise ImageUnavailableError(reason) from err
        check_image_size(
            info,
            request.image_processor_tile_size,
            self._settings.max_image_pixels,
            self._settings.max_tile_bytes,
        )
        plan = plan_image(info, request, self._settings.dem_url)
        regions = split_regions(
            plan.tiles,
            plan.layout,
            region_px or self._settings.region_size_px,
            request.image_processor_tile_overlap,
        )
        region_px = region_px or self._settings.region_size_px
        return ImageJob(ref, info, plan, regions, region_px, credentials)

    async def run_region(
        self, job: ImageJob, region: Region, progress: TileProgress
    ) -> StagedRegion:
        """Send the region's tiles to the model; its detections (inside the region of
        interest) and failed tiles."""
        tables = await self._run_tiles(job, list(region.tiles), progress)
        table = await self._in_thread(DetectionTable.concat, tables)
        if job.plan.region is not None:
            table = table.take(await self._in_thread(rows_in_region, table, job.plan.region))
        return StagedRegion(table, len(region.tiles), tuple(progress.failures))

    async def finalise(
        self,
        job: ImageJob,
        staged: list[StagedRegion],
        started: float,
        progress: OutputProgress | None = None,
    ) -> ImageOutcome:
        """Remove duplicates over all regions and write the outputs
        (:func:`worker.output.finalise_image`), streams resuming after ``progress``.

        Raises:
            SinkError: If an output could not be written.
        """
        sinks = await self._sinks.for_request(job.request)
        source = FinalSource(job.ref, job.info, job.plan.layout, self._settings.dem_url)
        return await finalise_image(source, staged, started, sinks, self._executor, progress)

    async def _run_tiles(
        self, job: ImageJob, tiles: list[Window], progress: TileProgress
    ) -> list[DetectionTable]:
        """Encoders fill a bounded queue of tiles; callers send them to the endpoint.

        Reading and encoding run ahead of the endpoint calls, so a slow model is kept busy
        with ``endpoint_concurrency`` tiles in flight; at most that many wait encoded. Each of
        the ``encode_threads`` encoders reads its own contiguous band of the tiles through its
        own GDAL handle, so the source blocks under overlapping tiles are decoded once, and
        encodes ``ENCODE_BATCH`` tiles per trip to the thread pool, so the pool's threads are
        not left waiting for the event loop after every tile. The bytes of an ``s3://`` image
        are fetched ahead of the encoders in a few large reads (:mod:`worker.readahead`).
        """
        plan, info = job.plan, job.info
        endpoint = await self._endpoints.for_request(job.request)
        lanes = max(1, min(self._settings.encode_threads, len(tiles)))
        share = -(-len(tiles) // lanes)
        bands = [tiles[lane * share : (lane + 1) * share] for lane in range(lanes)]
        largest = max((w.width * w.height for w in tiles), default=1)
        tile_bytes = largest * info.band_count * np.dtype(info.dtype).itemsize
        batch = max(1, min(ENCODE_BATCH, ENCODE_BATCH_BYTES // tile_bytes))
        concurrency = max(1, min(self._settings.endpoint_concurrency, len(tiles)))
        ready: asyncio.Queue[tuple[Window, bytes] | None] = asyncio.Queue(concurrency)
        # Kept in tile order, not reply order: the same tiles give the same table, so a
        # resumed finalisation writes its features in the same order.
        found: dict[Window, DetectionTable] = {}
        async with AsyncExitStack() as stack:
            source = await self._region_source(stack, job, bands)

            def reader() -> WindowReader:
                if source is None:
                    return WindowReader(job.url, job.credentials)
                return WindowReader(job.url, None, source.path, source.reads.done)

            async def encoder(band: list[Window]) -> None:
                with reader() as window_reader:
                    for start in range(0, len(band), batch):
                        windows = band[start : start + batch]
                        encoded = await asyncio.get_running_loop().run_in_executor(
                            self._encoders,
                            encode_windows,
                            window_reader,
                            info,
                            windows,
                            plan.tile_format,
                            plan.tile_compression,
                        )
                        for window, payload in zip(windows, encoded, strict=True):
                            if isinstance(payload, TilingError):
                                self._tile_failed(window, payload, progress)
                                progress.done += 1  # failed before the endpoint: done here
                            else:
                                await ready.put((window, payload))

            async def caller() -> None:
                while (item := await ready.get()) is not None:
                    found[item[0]] = await self._call(plan, item[0], item[1], endpoint, progress)
                    progress.done += 1

            async with asyncio.TaskGroup() as group:
                callers = [group.create_task(caller()) for _ in range(concurrency)]
                async with asyncio.TaskGroup() as encoders:
                    for band in bands:
                        encoders.create_task(encoder(band))
                for _ in callers:
                    await ready.put(None)
            if source is not None:
                report_reads(job.job_id, job.url, source, len(tiles), source.reads.size)
        return [found[window] for window in tiles if window in found]

    async def _region_source(
        self, stack: AsyncExitStack, job: ImageJob, bands: list[list[Window]]
    ) -> RegionSource | None:
        """The region's bytes fetched ahead, None where GDAL reads the image itself (read-ahead
        off, not ``s3://``, a SICD in several segments, or the object cannot be read so)."""
        if self._read_ahead is None or not job.url.startswith("s3://") or job.info.sicd:
            return None
        try:
            return await stack.enter_async_context(
                self._read_ahead.region(job.url, job.credentials, bands, self._in_thread)
            )
        except (OSError, ImageOpenError) as err:
            log.warning("job %s image %s: no read-ahead (%s); GDAL reads", job.job_id, job.url, err)
            return None

    async def _call(
        self,
        plan: ImagePlan,
        window: Window,
        payload: bytes,
        endpoint: ModelEndpoint,
        progress: TileProgress,
    ) -> DetectionTable:
        started = time.monotonic()
        try:
            body = await endpoint.invoke(payload, content_type(plan.tile_format))
            if (stats := tile_stats()) is not None:
                stats.latencies_s.append(time.monotonic() - started)
            limit, answered_s = self._settings.max_reply_features, time.time()
            if len(body) <= INLINE_REPLY_BYTES:  # cheaper here than a trip to the pool
                return parse_tile_reply(body, window, limit, answered_s)
            return await self._in_thread(parse_tile_reply, body, window, limit, answered_s)
        except (EndpointError, ModelOutputError) as err:
            self._tile_failed(window, err, progress)
            return DetectionTable()

    @staticmethod
    def _tile_failed(window: Window, err: Exception, progress: TileProgress) -> None:
        log.warning("job %s tile %s failed: %s", progress.job_id, window, err)
        progress.failures.append(FailedTile(window, str(err)))
        if (stats := tile_stats()) is not None:
            stats.failures += 1
