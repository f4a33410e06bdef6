"""An image's outputs: duplicate removal over all its regions, features, every sink.

:func:`finalise_image` is the last step of an image: it removes the duplicates that tile and
region overlaps create, geolocates the features and streams them to the request's outputs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from postprocessing.features import (
    Distillation,
    FeatureContext,
    TileLayout,
    feature_chunks,
    suppress_duplicates,
)
from postprocessing.properties import inference_dt, nitf_source_metadata
from postprocessing.table import DetectionTable
from tiling.image import ImageInfo
from worker.contract.messages import ImageRequest
from worker.contract.records import ImageOutcome
from worker.contract.status import Status
from worker.images import ImageRef
from worker.ports import OutputProgress, Sink, SinkWriter
from worker.reports import all_tiles_failed
from worker.staging import StagedRegion

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class FinalSource:
    """The image being finalised: which it is, its header, its tile grid, the DEM to use."""

    ref: ImageRef
    info: ImageInfo
    layout: TileLayout
    dem_url: str | None = None


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


def feature_context(
    info: ImageInfo, request: ImageRequest, dem: str | None = None
) -> FeatureContext:
    """What every output feature of an image shares."""
    sensor_model = info.sensor_model(dem)
    if sensor_model is None:
        log.warning("image %s has no georeferencing: features stay in pixel space", info.url)
    return FeatureContext(
        sensor_model=sensor_model,
        inference_metadata={"jobId": request.job_id, "inferenceDT": inference_dt(time.time())},
        source_metadata=nitf_source_metadata(info.tags, info.url),
        extra_properties=request.merged_feature_properties,
        image_id=f"{request.job_id}:{info.url}",
    )


async def _in_thread(executor: Executor, fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


async def finalise_image(
    source: FinalSource,
    staged: list[StagedRegion],
    started: float,
    sinks: list[Sink],
    executor: Executor,
    progress: OutputProgress | None = None,
) -> ImageOutcome:
    """Remove duplicates over all regions and write the outputs (resuming streams where
    ``progress`` says an earlier attempt stopped).

    The features come out in the same order whenever the same staged regions are finalised
    again (duplicate removal and feature output are deterministic), which is what lets a
    stream resume after the features it acknowledged.

    Returns:
        The outcome: FAILED, with the counts and the failed tiles and nothing written, if
        every tile failed; else SUCCESS or PARTIAL.

    Raises:
        SinkError: If an output could not be written.
    """
    if (failed_outcome := all_tiles_failed(staged, started)) is not None:
        return failed_outcome
    request, url = source.ref.request, source.ref.url
    failed = sum(s.failed_count for s in staged)
    table = await _in_thread(executor, DetectionTable.concat, [s.table for s in staged])
    selection = await _in_thread(
        executor, suppress_duplicates, table, distillation(request), source.layout
    )
    log.info(
        "job %s image %s: %d detections, %d after duplicate removal",
        request.job_id,
        url,
        len(table),
        selection.rows.size,
    )
    context = feature_context(source.info, request, source.dem_url)
    chunks = feature_chunks(table, selection, context)
    writing = time.monotonic()
    outputs = await write_outputs(
        sinks, (request.job_id, source.ref.output_name), chunks, executor, progress
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
        tile_count=sum(s.tile_count for s in staged),
        failed_tiles=failed,
        feature_count=int(selection.rows.size),
        duration_s=time.time() - started,
        outputs=tuple(outputs),
        failed_tile_list=tuple(f for s in staged for f in s.failed_tiles),
    )


async def write_outputs(
    sinks: list[Sink],
    names: tuple[str, str],
    chunks: Iterator[list[str]],
    executor: Executor,
    progress: OutputProgress | None = None,
) -> tuple[str, ...]:
    """Write every chunk to every sink (``names``: job id, output name); on failure abort all
    outputs and re-raise.

    Chunks are produced on ``executor`` (geolocation and JSON are CPU work), the next while the
    outputs take the current one, so memory holds two chunks whatever the number of features.
    Every output finishes the step it is on before a failure of another is raised, so what a
    stream acknowledged is recorded in ``progress`` and not sent again by the next attempt.

    Returns:
        Where each output went.
    """
    loop = asyncio.get_running_loop()
    writers: list[SinkWriter] = []
    written = False
    upcoming: asyncio.Future[list[str] | None] | None = None
    try:
        for sink in sinks:
            writers.append(await sink.open(*names, progress))
        upcoming = loop.run_in_executor(executor, next, chunks, None)
        while (chunk := await upcoming) is not None:
            # Make the next chunk while the outputs take this one.
            upcoming = loop.run_in_executor(executor, next, chunks, None)
            await _all_of(writer.write(chunk) for writer in writers)
        locations = tuple(await _all_of(writer.close() for writer in writers))
        written = True
    finally:
        if not written:
            if upcoming is not None:
                upcoming.cancel()
            for writer in writers:
                await writer.abort()
    return locations


async def _all_of(steps: Iterator[Awaitable[T]]) -> list[T]:
    """Every step's result; if any failed, the first failure, once all have ended."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast("list[T]", results)
