"""Running an image's regions: plan the image, fan its regions out, run and stage each region.

The planning worker records the image (its job record), sends regions 2..N to the region queue
and runs region 1. Whoever finishes a region stages its detections and adds the region to the
image's set of finished regions; the worker whose region completes the set hands the image to
the finaliser (:mod:`worker.finaliser`). Every step is safe to repeat, so a redelivered or
crashed message is simply done again.

A request for an image that has ended: a redelivery of the message that started its run (same
submission id) runs nothing and publishes the recorded terminal status only if it has not gone
out (a redelivery follows a receiver that died: one terminal status, never two); a new submission
(another message id) runs the image again from scratch as its next run. A request for an image
still in progress joins the run in progress, as a redelivery does. Region messages carry their
run: one of an earlier run is acknowledged and ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from postprocessing.table import DetectionTable
from tiling.grid import Window
from worker.capacity import image_load
from worker.contract.records import FailedTile, ImageRecord, RunPlan
from worker.contract.regions import RegionRequest
from worker.errors import PermanentError
from worker.finaliser import Finaliser, record_of
from worker.images import ImageRef
from worker.metrics import gathering_tile_stats, set_log_context
from worker.pipeline import ImageJob, TileProgress
from worker.ports import JobStore, MessageSender, Staging
from worker.regions import Region
from worker.reporter import Reporter
from worker.reports import deadline_reason
from worker.staging import StagedRegion

log = logging.getLogger(__name__)


class RegionPipeline(Protocol):
    """What running regions needs of the image pipeline."""

    async def plan(self, ref: ImageRef, region_px: int | None = None) -> ImageJob:
        """Open and plan the image."""
        ...

    async def run_region(
        self, job: ImageJob, region: Region, progress: TileProgress
    ) -> StagedRegion:
        """Send the region's tiles to the model."""
        ...


@dataclass(frozen=True, slots=True)
class RunningSettings:
    """What running regions is told."""

    job_deadline_s: float
    endpoint_concurrency: int
    progress_interval_s: float


class ImageFailedError(PermanentError):
    """The image cannot be processed; it has ended FAILED with this reason."""


class Runner:
    """Starts images and runs regions on this worker, in step with every other worker."""

    def __init__(
        self,
        settings: RunningSettings,
        pipeline: RegionPipeline,
        ports: tuple[JobStore, Staging, MessageSender],
        reporter: Reporter,
        finaliser: Finaliser,
    ) -> None:
        """Run through ``pipeline``; ``ports`` are the job store, the staging and the region
        queue; complete images go to ``finaliser``."""
        self._settings = settings
        self._pipeline = pipeline
        self._jobs, self._staging, self._region_queue = ports
        self._reporter = reporter
        self._finaliser = finaliser

    # ---- images ------------------------------------------------------------------------

    async def start_image(self, ref: ImageRef, submission_id: str = "") -> None:
        """Plan an image, fan its regions out and run region 1 (or, for a request of an image
        whose run it started has ended, publish its recorded status if it has not gone out).

        Raises:
            ImageFailedError: If the image cannot be processed (it has ended FAILED).
            RetryableError: On a transient failure; everything done so far may be repeated.
        """
        set_log_context(job_id=ref.job_id, image_id=ref.image_id)
        existing = await self._jobs.get(ref.job_id, ref.url)
        if await self._finaliser.ended_for(ref, existing, submission_id):
            return
        try:
            job = await self._pipeline.plan(ref)
        except PermanentError as err:
            log.warning("job %s image %s cannot be processed: %s", ref.job_id, ref.url, err)
            await self._finaliser.fail(ref, str(err), submission_id)
            raise ImageFailedError(f"{ref.url}: {err}") from err
        record = await self._jobs.open_image(
            ref.job_id, ref.url, self._run_plan(job, submission_id)
        )
        if await self._finaliser.ended_for(ref, record, submission_id):
            return
        if record.created:
            await self._reporter.started(ref, job.tile_count, len(job.regions), record.run)
        log.info("job %s image %s: %s", ref.job_id, ref.url, job.summary())
        for region in job.regions[1:]:
            if region.region_id not in record.regions_done:
                await self._region_queue.send(region_message(job, region, record.run))
        await self._run_region(job, job.regions[0], record)

    def _run_plan(self, job: ImageJob, submission_id: str) -> RunPlan:
        settings = self._settings
        return RunPlan(
            job.request.job_name,
            len(job.regions),
            job.tile_count,
            settings.job_deadline_s,
            submission_id=submission_id,
            endpoint=job.request.image_processor.name,
            load=image_load(job.tile_count, len(job.regions), settings.endpoint_concurrency),
            request_body=job.request.original_body,
            image_index=job.index,
        )

    # ---- regions -----------------------------------------------------------------------

    async def run_region(self, region_request: RegionRequest, ref: ImageRef) -> None:
        """Run a region another worker planned.

        Raises:
            RetryableError: On a transient failure.
            PermanentError: If the image cannot be opened or no longer matches the plan.
        """
        set_log_context(
            job_id=ref.job_id, image_id=ref.image_id, region_id=str(region_request.region_id)
        )
        record = await record_of(self._jobs, ref)
        if stale(region_request, record):
            return
        if record.final_status is not None:
            log.info(
                "job %s image %d region %d: image already ended %s",
                ref.job_id,
                ref.index,
                region_request.region_id,
                record.final_status,
            )
            await self._finaliser.publish_recorded(ref)
            return
        job = await self._pipeline.plan(ref, region_request.region_size_px)
        if len(job.regions) != region_request.region_count:
            raise PermanentError(
                f"image {ref.url} now plans {len(job.regions)} regions, not"
                f" {region_request.region_count}: it changed while being processed"
            )
        await self._run_region(job, job.region(region_request.region_id), record)

    async def give_up_region(
        self, region_request: RegionRequest, ref: ImageRef, reason: str
    ) -> None:
        """Count a region that cannot be done as failed tiles, so its image still ends."""
        region_id = region_request.region_id
        col, row, width, height = region_request.region_bounds
        lost = StagedRegion(
            DetectionTable(),
            region_request.tile_count,
            (FailedTile(Window(col, row, width, height), f"region {region_id}: {reason}"),),
            lost_tiles=region_request.tile_count - 1,
        )
        record = await record_of(self._jobs, ref)
        if record.final_status is not None or stale(region_request, record):
            return
        await self._staging.put(ref.job_id, ref.index, region_id, lost, record.run)
        await self._reporter.region(
            ref, (region_id, region_request.region_count), lost, record.start_time
        )
        done = await self._region_done(ref, region_id, record.run)
        if done is not None and done.complete:
            await self._finaliser.complete(ref, done)

    async def _region_done(self, ref: ImageRef, region_id: int, run: int) -> ImageRecord | None:
        """Record the region as done in ``run``; None if the image has moved on to another run."""
        record = await self._jobs.region_done(ref.job_id, ref.url, region_id, run)
        if record is None:
            log.info(
                "job %s image %s region %d: run %d is over, result dropped",
                ref.job_id,
                ref.url,
                region_id,
                run,
            )
        return record

    async def _run_region(self, job: ImageJob, region: Region, record: ImageRecord) -> None:
        if record.past_deadline():
            await self._deadline_exceeded(job)
            return
        if len(job.regions) == 1:
            # The only region: this worker finalises it from memory, nothing to stage. A crash
            # redelivers the image request, which does it again.
            only = await self._run_in_time(job, region, record)
            if only is None:
                return
            done = await self._region_done(job.ref, region.region_id, record.run)
            if done is not None:
                await self._finaliser.complete(job.ref, done, job, only)
            return
        # Staged but perhaps not recorded (its worker died in between): not run again.
        staged_already = await self._staging.exists(
            job.job_id, job.index, region.region_id, record.run
        )
        if staged_already:
            log.info("job %s region %d: already staged", job.job_id, region.region_id)
        elif not await self._run_and_stage(job, region, record):
            return
        done = await self._region_done(job.ref, region.region_id, record.run)
        if done is not None and done.complete:
            await self._finaliser.complete(job.ref, done, job)

    async def _run_in_time(
        self, job: ImageJob, region: Region, record: ImageRecord
    ) -> StagedRegion | None:
        """Run the region's tiles within the job deadline (None: the job ran out of time)."""
        try:
            async with asyncio.timeout(record.deadline - time.time()):
                staged = await self._tiles(job, region)
        except TimeoutError:
            await self._deadline_exceeded(job)
            return None
        log.info(
            "job %s image %s region %d/%d done: %d tiles (%d failed), %d detections",
            job.job_id,
            job.url,
            region.region_id,
            len(job.regions),
            staged.tile_count,
            staged.failed_count,
            len(staged.table),
        )
        await self._reporter.region(
            job.ref, (region.region_id, len(job.regions)), staged, record.start_time
        )
        return staged

    async def _run_and_stage(self, job: ImageJob, region: Region, record: ImageRecord) -> bool:
        """Run the region's tiles and stage the result; False if the job ran out of time.

        The region's detections are released when this returns, before any finalisation.
        """
        staged = await self._run_in_time(job, region, record)
        if staged is None:
            return False
        await self._staging.put(job.job_id, job.index, region.region_id, staged, record.run)
        log.info("job %s image %s region %d staged", job.job_id, job.url, region.region_id)
        return True

    async def _tiles(self, job: ImageJob, region: Region) -> StagedRegion:
        log.info(
            "job %s image %s region %d/%d: %d tiles over %s",
            job.job_id,
            job.url,
            region.region_id,
            len(job.regions),
            len(region.tiles),
            region.bounds,
        )
        set_log_context(region_id=str(region.region_id))
        progress = TileProgress(job.job_id, len(region.tiles))
        reporting = asyncio.create_task(self._report(job, region, progress))
        started = time.monotonic()
        try:
            with gathering_tile_stats() as stats:
                staged = await self._pipeline.run_region(job, region, progress)
        finally:
            reporting.cancel()
        await self._progress(job, region, progress)
        dimensions = {"Model": job.request.image_processor.name, "InputFormat": job.info.driver}
        elapsed = (len(region.tiles), time.monotonic() - started)
        self._reporter.region_metrics(job.ref, region.region_id, dimensions, stats, elapsed)
        return staged

    async def _report(self, job: ImageJob, region: Region, progress: TileProgress) -> None:
        """IN_PROGRESS every progress interval while the region's tiles run."""
        while True:
            await asyncio.sleep(self._settings.progress_interval_s)
            await self._progress(job, region, progress)

    async def _progress(self, job: ImageJob, region: Region, progress: TileProgress) -> None:
        await self._reporter.progress(
            job.ref,
            (region.region_id, len(job.regions)),
            (progress.done, progress.total),
            progress.failures,
        )

    async def _deadline_exceeded(self, job: ImageJob) -> None:
        await self._finaliser.fail_recorded(job.ref, deadline_reason(self._settings.job_deadline_s))


def stale(region_request: RegionRequest, record: ImageRecord) -> bool:
    """A region message of an earlier run of the image (to be acknowledged and ignored)."""
    if region_request.run == record.run:
        return False
    log.info(
        "job %s image %d region %d: of run %d, but the image is on run %d: ignored",
        region_request.job_id,
        region_request.image_index,
        region_request.region_id,
        region_request.run,
        record.run,
    )
    return True


def region_message(job: ImageJob, region: Region, run: int) -> str:
    """The region queue message of a region of a planned image."""
    bounds = region.bounds
    return RegionRequest(
        job_id=job.job_id,
        image_index=job.index,
        region_id=region.region_id,
        region_count=len(job.regions),
        region_size_px=job.region_px,
        tile_count=len(region.tiles),
        region_bounds=(bounds.col_off, bounds.row_off, bounds.width, bounds.height),
        image_request=job.request.original_body,
        run=run,
    ).body()
