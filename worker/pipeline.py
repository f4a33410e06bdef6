"""The image pipeline: read -> encode -> invoke -> parse/shift -> NMS -> geolocate -> outputs.

One image at a time per call; tiles flow through a bounded number of concurrent tile tasks, so
memory holds at most ``endpoint_concurrency`` tiles whatever the image size.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from postprocessing.detections import parse_model_output
from postprocessing.errors import ModelOutputError
from postprocessing.features import (
    Distillation,
    FeatureContext,
    feature_chunks,
    nitf_source_metadata,
    rows_in_region,
    suppress_duplicates,
)
from postprocessing.table import DetectionTable
from tiling.encode import TileGeoref, content_type, encode_tile
from tiling.errors import ImageOpenError, TilingError
from tiling.grid import Window
from tiling.image import ImageInfo, WindowReader, describe_image
from tiling.sensor import sensor_model_for
from worker.endpoints import ModelEndpoint
from worker.errors import EndpointError, ImageUnavailableError, PermanentError
from worker.jobstore import ImageOutcome, JobStore
from worker.messages import ImageRequest
from worker.output import write_outputs
from worker.plan import ImagePlan, plan_image
from worker.settings import Settings
from worker.sinks import Sink
from worker.status import Status, StatusEvent, StatusPublisher

log = logging.getLogger(__name__)

T = TypeVar("T")


class EndpointFactory(Protocol):
    """Builds the endpoint a request targets."""

    async def for_request(self, request: ImageRequest) -> ModelEndpoint:
        """Return the request's model endpoint."""
        ...


class SinkFactory(Protocol):
    """Builds the outputs a request asks for."""

    async def for_request(self, request: ImageRequest) -> list[Sink]:
        """Return the request's outputs."""
        ...


@dataclass(slots=True)
class TileProgress:
    """Tiles done and failed so far for one image."""

    job_id: str
    total: int
    done: int = 0
    failures: list[tuple[Window, str]] = field(default_factory=list)


def output_name(request: ImageRequest, index: int) -> str:
    """``<jobId>.geojson`` for a single image, ``<jobId>_<index>.geojson`` for several."""
    if len(request.image_urls) == 1:
        return f"{request.job_id}.geojson"
    return f"{request.job_id}_{index}.geojson"


def encode_window(
    reader: WindowReader, info: ImageInfo, window: Window, tile_format: str, compression: str
) -> bytes:
    """Read one window and encode it as a tile (runs on the thread pool)."""
    transform = info.tile_transform(window)
    georef = TileGeoref(transform, info.crs) if transform is not None else None
    return encode_tile(reader.read(window), tile_format, compression, georef)


def parse_tile_reply(body: bytes, window: Window) -> DetectionTable:
    """Parse a model reply and move it to full-image pixels (runs on the thread pool)."""
    return parse_model_output(body, window.col_off, window.row_off)


def distillation(request: ImageRequest) -> Distillation | None:
    """The request's duplicate removal parameters (None when switched off)."""
    algorithm = request.algorithm
    if algorithm is None:
        return None
    return Distillation(
        method=algorithm.algorithm_type.value,
        iou_threshold=algorithm.iou_threshold,
        sigma=algorithm.sigma,
        skip_box_threshold=algorithm.skip_box_threshold,
    )


def feature_context(info: ImageInfo, request: ImageRequest) -> FeatureContext:
    """What every output feature of an image shares."""
    sensor_model = sensor_model_for(info.transform, info.crs)
    if sensor_model is None:
        log.warning("image %s has no georeferencing: features stay in pixel space", info.url)
    return FeatureContext(
        sensor_model=sensor_model,
        inference_metadata={
            "jobId": request.job_id,
            "inferenceDT": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        source_metadata=nitf_source_metadata(info.tags, info.url),
        extra_properties=request.merged_feature_properties,
    )


class ImagePipeline:
    """Processes the images of requests; publishes their statuses and records them."""

    def __init__(
        self,
        settings: Settings,
        endpoints: EndpointFactory,
        sinks: SinkFactory,
        status: StatusPublisher,
        jobs: JobStore,
        executor: Executor,
    ) -> None:
        """Wire the pipeline to its ports."""
        self._settings = settings
        self._endpoints = endpoints
        self._sinks = sinks
        self._status = status
        self._jobs = jobs
        self._executor = executor

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, request: ImageRequest, index: int) -> ImageOutcome:
        """Process image ``index`` of ``request`` to a terminal status.

        PermanentError ends the image FAILED; RetryableError propagates to the loop.
        """
        url = request.image_urls[index]
        started = time.monotonic()
        await self._status.publish(
            StatusEvent(
                status=Status.STARTED,
                job_id=request.job_id,
                description=f"processing image {url}",
                image_url=url,
            )
        )
        await self._jobs.start(request.job_id, url, request.job_name)
        try:
            outcome = await self._process(request, index, started)
        except PermanentError as err:
            log.warning("job %s image %s failed: %s", request.job_id, url, err)
            outcome = ImageOutcome(
                Status.FAILED, duration_s=time.monotonic() - started, reason=str(err)
            )
        await self._finish(request, url, outcome)
        return outcome

    async def _process(self, request: ImageRequest, index: int, started: float) -> ImageOutcome:
        url = request.image_urls[index]
        try:
            info = await self._in_thread(describe_image, url)
        except ImageOpenError as err:
            raise ImageUnavailableError(str(err)) from err
        plan = plan_image(info, request)
        tiles = plan.tiles
        log.info(
            "job %s image %s: %dx%d px, %d bands %s; %d tiles over %s",
            request.job_id,
            url,
            info.width,
            info.height,
            info.band_count,
            info.dtype,
            len(tiles),
            plan.bounds,
        )
        progress = TileProgress(request.job_id, len(tiles))
        reporter = asyncio.create_task(self._report(request, url, progress))
        try:
            with WindowReader(url) as reader:
                tables = await self._run_tiles(request, info, reader, plan, progress)
        finally:
            reporter.cancel()
        failed = len(progress.failures)
        if failed == len(tiles):
            raise PermanentError(f"all {failed} tiles failed; first: {progress.failures[0][1]}")
        table = await self._in_thread(DetectionTable.concat, tables)
        if plan.region is not None:
            table = table.take(await self._in_thread(rows_in_region, table, plan.region))
        selection = await self._in_thread(
            suppress_duplicates, table, distillation(request), plan.layout
        )
        log.info(
            "job %s image %s: %d detections, %d after duplicate removal",
            request.job_id,
            url,
            len(table),
            selection.rows.size,
        )
        chunks = feature_chunks(table, selection, feature_context(info, request))
        writing = time.monotonic()
        outputs = await write_outputs(
            await self._sinks.for_request(request),
            request.job_id,
            output_name(request, index),
            chunks,
            self._executor,
        )
        log.info(
            "job %s image %s: features written to %s in %.1fs",
            request.job_id,
            url,
            ", ".join(outputs),
            time.monotonic() - writing,
        )
        return ImageOutcome(
            status=Status.PARTIAL if failed else Status.SUCCESS,
            tile_count=len(tiles),
            failed_tiles=failed,
            feature_count=int(selection.rows.size),
            duration_s=time.monotonic() - started,
            outputs=tuple(outputs),
        )

    async def _run_tiles(
        self,
        request: ImageRequest,
        info: ImageInfo,
        reader: WindowReader,
        plan: ImagePlan,
        progress: TileProgress,
    ) -> list[DetectionTable]:
        """Encoders fill a bounded queue of tiles; callers send them to the endpoint.

        Reading and encoding run ahead of the endpoint calls, so a slow model is kept busy
        with ``endpoint_concurrency`` tiles in flight; at most that many wait encoded.
        """
        endpoint = await self._endpoints.for_request(request)
        pending = iter(plan.tiles)
        concurrency = min(self._settings.endpoint_concurrency, len(plan.tiles))
        ready: asyncio.Queue[tuple[Window, bytes] | None] = asyncio.Queue(concurrency)
        found: list[DetectionTable] = []

        async def encoder() -> None:
            for window in pending:  # shared iterator: each tile is taken by one encoder
                payload = await self._encode(plan, info, reader, window, progress)
                if payload is None:
                    progress.done += 1  # failed before the endpoint: done here
                else:
                    await ready.put((window, payload))

        async def caller() -> None:
            while (item := await ready.get()) is not None:
                found.append(await self._call(plan, item[0], item[1], endpoint, progress))
                progress.done += 1

        async with asyncio.TaskGroup() as group:
            callers = [group.create_task(caller()) for _ in range(concurrency)]
            async with asyncio.TaskGroup() as encoders:
                for _ in range(self._settings.encode_threads):
                    encoders.create_task(encoder())
            for _ in callers:
                await ready.put(None)
        return found

    async def _encode(
        self,
        plan: ImagePlan,
        info: ImageInfo,
        reader: WindowReader,
        window: Window,
        progress: TileProgress,
    ) -> bytes | None:
        try:
            return await self._in_thread(
                encode_window, reader, info, window, plan.tile_format, plan.tile_compression
            )
        except TilingError as err:
            self._tile_failed(window, err, progress)
            return None

    async def _call(
        self,
        plan: ImagePlan,
        window: Window,
        payload: bytes,
        endpoint: ModelEndpoint,
        progress: TileProgress,
    ) -> DetectionTable:
        try:
            body = await endpoint.invoke(payload, content_type(plan.tile_format))
            return await self._in_thread(parse_tile_reply, body, window)
        except (EndpointError, ModelOutputError) as err:
            self._tile_failed(window, err, progress)
            return DetectionTable()

    @staticmethod
    def _tile_failed(window: Window, err: Exception, progress: TileProgress) -> None:
        log.warning("job %s tile %s failed: %s", progress.job_id, window, err)
        progress.failures.append((window, str(err)))

    async def _report(self, request: ImageRequest, url: str, progress: TileProgress) -> None:
        while True:
            await asyncio.sleep(self._settings.progress_interval_s)
            event = StatusEvent(
                status=Status.IN_PROGRESS,
                job_id=request.job_id,
                description=f"{progress.done}/{progress.total} tiles done",
                image_url=url,
                failed_tiles=len(progress.failures),
            )
            try:
                await self._status.publish(event)
                await self._jobs.progress(request.job_id, url, progress.total, progress.done)
            except (BotoCoreError, ClientError) as err:  # progress is best effort
                log.warning("job %s: progress update failed: %s", request.job_id, err)

    async def _finish(self, request: ImageRequest, url: str, outcome: ImageOutcome) -> None:
        if outcome.status is Status.FAILED:
            description = f"image {url} failed: {outcome.reason}"
        else:
            description = (
                f"image {url}: {outcome.tile_count} tiles ({outcome.failed_tiles} failed),"
                f" {outcome.feature_count} features in {outcome.duration_s:.1f}s"
            )
        await self._status.publish(
            StatusEvent(
                status=outcome.status,
                job_id=request.job_id,
                description=description,
                image_url=url,
                processing_duration_s=outcome.duration_s,
                failed_tiles=outcome.failed_tiles,
            )
        )
        await self._jobs.finish(request.job_id, url, outcome)
