"""Who does what of an image: planning, fan-out of regions, staging, exactly-once finalisation.

The planning worker records the image (DynamoDB), sends regions 2..N to the region queue and
runs region 1. Whoever finishes a region stages its detections in S3 and adds the region to the
image's set of finished regions. The worker whose region completes the set claims the image
(a lease) and finalises it: reads every staged region, removes duplicates, writes the outputs,
records the terminal outcome once and publishes it. Every step is safe to repeat, so a
redelivered or crashed message is simply done again; the message that completes an image is
only deleted after the image's terminal status is out.

A request for an image that has ended: a redelivery of the message that started its run (same
submission id) publishes the recorded terminal status again and runs nothing; a new submission
(another message id) runs the image again from scratch as its next run (STARTED, regions,
outputs rewritten, a new terminal status). A request for an image still in progress joins the
run in progress, as a redelivery does. Region messages carry their run: one of an earlier run
is acknowledged and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from postprocessing.table import DetectionTable
from tiling.grid import Window
from worker.capacity import image_load
from worker.contract.messages import ImageRequest, RegionRequest
from worker.contract.records import FailedTile, ImageOutcome, ImageRecord, RunPlan
from worker.contract.status import Status
from worker.errors import FinalisingElsewhere, PermanentError
from worker.metrics import (
    MetricsWriter,
    gathering_tile_stats,
    image_values,
    region_values,
    set_log_context,
)
from worker.pipeline import ImageJob, ImagePipeline, TileProgress
from worker.ports import DeadLetters, JobStore, MessageSender, Staging, StatusPublisher
from worker.regions import Region
from worker.reports import (
    describe_outcome,
    outcome_event,
    progress_event,
    region_event,
    started_event,
)
from worker.settings import Settings
from worker.staging import StagedRegion

log = logging.getLogger(__name__)


def metric_dimensions(job: ImageJob) -> dict[str, str]:
    """The dimensions of an image's metrics: the model and the input format."""
    return {"Model": job.request.image_processor.name, "InputFormat": job.info.driver}


@dataclass(frozen=True)
class Reporting:
    """Where the coordinator reports: image statuses, optional region statuses, metrics."""

    status: StatusPublisher
    region_status: StatusPublisher | None = None
    metrics: MetricsWriter | None = None


@dataclass
class _ImageLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Coordinator:
    """Runs images and regions on this worker, in step with every other worker."""

    def __init__(
        self,
        settings: Settings,
        pipeline: ImagePipeline,
        jobs: JobStore,
        staging: Staging,
        region_queue: MessageSender,
        reporting: Reporting,
        worker_id: str,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        """Wire the coordinator to its ports; ``worker_id`` names this worker's leases.

        An image that ends FAILED when it is finalised (every tile failed, or the outputs could
        not be written) has its request put in ``dead_letters``, the image DLQ, by the worker
        that finalises it: its message was settled long before.
        """
        self._settings = settings
        self._pipeline = pipeline
        self._jobs = jobs
        self._staging = staging
        self._region_queue = region_queue
        self._status = reporting.status
        self._region_status = reporting.region_status
        self._metrics = reporting.metrics
        self._worker_id = worker_id
        self._dead_letters = dead_letters
        self._locks: dict[str, _ImageLock] = {}

    # ---- images -------------------------------------------------------------------------

    async def start_image(
        self, request: ImageRequest, index: int, body: str, submission_id: str = ""
    ) -> str | None:
        """Plan image ``index``, fan its regions out and run region 1 (or, for a redelivered
        request of an image that has ended, publish its recorded status again).

        Returns:
            The reason if the image failed in planning (so the request goes to the dead-letter
            queue), else None: the image ends when its last region is finalised.

        Raises:
            RetryableError: On a transient failure; everything done so far may be repeated.
        """
        url = request.image_urls[index]
        set_log_context(job_id=request.job_id, image_id=f"{request.job_id}:{url}")
        if await self._ended_for(
            request, index, await self._jobs.get(request.job_id, url), submission_id
        ):
            return None
        try:
            job = await self._pipeline.plan(request, index)
        except PermanentError as err:
            log.warning("job %s image %s cannot be processed: %s", request.job_id, url, err)
            await self.fail_image(request, index, str(err), submission_id)
            return f"{url}: {err}"
        plan = RunPlan(
            request.job_name,
            len(job.regions),
            job.tile_count,
            self._settings.job_deadline_s,
            submission_id=submission_id,
            endpoint=request.image_processor.name,
            load=image_load(job.tile_count, len(job.regions), self._settings.endpoint_concurrency),
        )
        record = await self._jobs.open_image(request.job_id, url, plan)
        if await self._ended_for(request, index, record, submission_id):
            return None
        if record.created:
            await self._status.publish(
                started_event(job.job_id, url, job.tile_count, len(job.regions), record.run)
            )
        log.info(
            "job %s image %s: %dx%d px, %d bands %s; %d tiles in %d region(s) over %s",
            job.job_id,
            url,
            job.info.width,
            job.info.height,
            job.info.band_count,
            job.info.dtype,
            job.tile_count,
            len(job.regions),
            job.plan.bounds,
        )
        for region in job.regions[1:]:
            if region.region_id not in record.regions_done:
                await self._region_queue.send(self._region_message(job, region, body, record.run))
        await self._run_region(job, job.regions[0], record)
        return None

    async def _ended_for(
        self, request: ImageRequest, index: int, record: ImageRecord | None, submission_id: str
    ) -> bool:
        """Whether the image has ended for this request: if so, its status went out again."""
        if record is None or record.final_status is None:
            return False
        url = request.image_urls[index]
        if record.redelivered(submission_id):
            log.info(
                "job %s image %s: request redelivered after run %d ended %s; status again",
                request.job_id,
                url,
                record.run,
                record.final_status,
            )
            await self._republish(request, index, record)
            return True
        if submission_id:
            return False  # a new submission: open_image starts the next run
        log.warning("job %s image %s already ended %s", request.job_id, url, record.final_status)
        await self._publish_recorded(request, index)
        return True

    async def fail_image(
        self, request: ImageRequest, index: int, reason: str, submission_id: str = ""
    ) -> None:
        """End an image FAILED (once), whatever state its record is in."""
        url = request.image_urls[index]
        plan = RunPlan(request.job_name, 0, 0, self._settings.job_deadline_s, submission_id)
        record = await self._jobs.open_image(request.job_id, url, plan)
        if record.final_status is not None and record.redelivered(submission_id):
            await self._republish(request, index, record)
            return
        await self._fail_recorded(request, index, record, reason)

    async def _fail_recorded(
        self, request: ImageRequest, index: int, record: ImageRecord, reason: str
    ) -> None:
        url = request.image_urls[index]
        async with self._image_lock(request.job_id, url):
            record = await self._get(request, index)
            await self._fail_locked(request, index, record, reason)

    async def _fail_locked(
        self, request: ImageRequest, index: int, record: ImageRecord, reason: str
    ) -> None:
        url = request.image_urls[index]
        if record.final_status is None:
            if not await self._jobs.claim(
                request.job_id, url, self._worker_id, self._settings.visibility_timeout_s
            ):
                log.info("job %s image %s: another worker is ending it", request.job_id, url)
                return
            # Nothing of a FAILED image is output: every tile counts as failed.
            outcome = ImageOutcome(
                Status.FAILED,
                tile_count=record.tile_count,
                failed_tiles=record.tile_count,
                duration_s=time.time() - record.start_time,
                reason=reason,
            )
            if not await self._jobs.finish(request.job_id, url, self._worker_id, outcome):
                return
            record = await self._get(request, index)
        await self._publish_locked(request, index, record)

    # ---- regions ------------------------------------------------------------------------

    async def run_region(self, region_request: RegionRequest, request: ImageRequest) -> None:
        """Run a region another worker planned.

        Raises:
            RetryableError: On a transient failure.
            PermanentError: If the image cannot be opened or no longer matches the plan.
        """
        index = region_request.image_index
        set_log_context(
            job_id=request.job_id,
            image_id=f"{request.job_id}:{request.image_urls[index]}",
            region_id=str(region_request.region_id),
        )
        record = await self._get(request, index)
        if self._stale(region_request, record):
            return
        if record.final_status is not None:
            log.info(
                "job %s image %d region %d: image already ended %s",
                request.job_id,
                index,
                region_request.region_id,
                record.final_status,
            )
            await self._publish_recorded(request, index)
            return
        job = await self._pipeline.plan(request, index, region_request.region_size_px)
        if len(job.regions) != region_request.region_count:
            raise PermanentError(
                f"image {job.url} now plans {len(job.regions)} regions, not"
                f" {region_request.region_count}: it changed while being processed"
            )
        await self._run_region(job, job.region(region_request.region_id), record)

    async def give_up_region(
        self, region_request: RegionRequest, request: ImageRequest, reason: str
    ) -> None:
        """Count a region that cannot be done as failed tiles, so its image still ends."""
        index, region_id = region_request.image_index, region_request.region_id
        col, row, width, height = region_request.region_bounds
        lost = StagedRegion(
            DetectionTable(),
            region_request.tile_count,
            (FailedTile(Window(col, row, width, height), f"region {region_id}: {reason}"),),
            lost_tiles=region_request.tile_count - 1,
        )
        record = await self._get(request, index)
        if record.final_status is not None or self._stale(region_request, record):
            return
        await self._staging.put(request.job_id, index, region_id, lost, record.run)
        await self._publish_region(
            request, index, region_id, region_request.region_count, record, lost
        )
        done = await self._region_done(request, index, region_id, record.run)
        if done is not None and done.complete:
            await self._finalise_when_complete(request, index, done)

    @staticmethod
    def _stale(region_request: RegionRequest, record: ImageRecord) -> bool:
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

    async def _region_done(
        self, request: ImageRequest, index: int, region_id: int, run: int
    ) -> ImageRecord | None:
        """Record the region as done in ``run``; None if the image has moved on to another run."""
        url = request.image_urls[index]
        record = await self._jobs.region_done(request.job_id, url, region_id, run)
        if record is None:
            log.info(
                "job %s image %s region %d: run %d is over, result dropped",
                request.job_id,
                url,
                region_id,
                run,
            )
        return record

    async def _run_region(self, job: ImageJob, region: Region, record: ImageRecord) -> None:
        if record.past_deadline():
            await self._deadline_exceeded(job, record)
            return
        if len(job.regions) == 1:
            # The only region: this worker finalises it from memory, nothing to stage. A crash
            # redelivers the image request, which does it again.
            only = await self._run_in_time(job, region, record)
            if only is None:
                return
            done = await self._region_done(job.request, job.index, region.region_id, record.run)
            if done is not None:
                await self._finalise_when_complete(job.request, job.index, done, job, only)
            return
        staged_already = region.region_id in record.regions_done and await self._staging.exists(
            job.job_id, job.index, region.region_id, record.run
        )
        if staged_already:
            log.info("job %s region %d: already staged", job.job_id, region.region_id)
        elif not await self._run_and_stage(job, region, record):
            return
        done = await self._region_done(job.request, job.index, region.region_id, record.run)
        if done is not None and done.complete:
            await self._finalise_when_complete(job.request, job.index, done, job)

    async def _run_in_time(
        self, job: ImageJob, region: Region, record: ImageRecord
    ) -> StagedRegion | None:
        """Run the region's tiles within the job deadline (None: the job ran out of time)."""
        try:
            async with asyncio.timeout(record.deadline - time.time()):
                staged = await self._tiles(job, region)
        except TimeoutError:
            await self._deadline_exceeded(job, record)
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
        await self._publish_region(
            job.request, job.index, region.region_id, len(job.regions), record, staged
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
        reporter = asyncio.create_task(self._report(job, region, progress))
        started = time.monotonic()
        try:
            with gathering_tile_stats() as stats:
                staged = await self._pipeline.run_region(job, region, progress)
        finally:
            reporter.cancel()
        await self._publish_progress(job, region, progress)
        if self._metrics is not None:
            self._metrics.write(
                metric_dimensions(job),
                region_values(stats, len(region.tiles), time.monotonic() - started),
                {
                    "job_id": job.job_id,
                    "image_id": f"{job.job_id}:{job.url}",
                    "region_id": str(region.region_id),
                },
            )
        return staged

    async def _deadline_exceeded(self, job: ImageJob, record: ImageRecord) -> None:
        limit = self._settings.job_deadline_s
        await self._fail_recorded(
            job.request,
            job.index,
            record,
            f"job deadline exceeded: not finished {limit:.0f}s after it started"
            " (MODELRUNNER_JOB_DEADLINE_S)",
        )

    # ---- finalisation -------------------------------------------------------------------

    async def _finalise_when_complete(
        self,
        request: ImageRequest,
        index: int,
        record: ImageRecord,
        job: ImageJob | None = None,
        only_region: StagedRegion | None = None,
    ) -> None:
        url = request.image_urls[index]
        if record.final_status is not None and record.published:
            return
        async with self._image_lock(request.job_id, url):
            await self._finalise_locked(request, index, job, only_region)

    async def _finalise_locked(
        self,
        request: ImageRequest,
        index: int,
        job: ImageJob | None,
        only_region: StagedRegion | None,
    ) -> None:
        url = request.image_urls[index]
        lease_s = self._settings.visibility_timeout_s
        if not await self._jobs.claim(request.job_id, url, self._worker_id, lease_s):
            record = await self._get(request, index)
            if record.final_status is not None and record.published:
                return
            log.info("job %s image %s: another worker finalises it", request.job_id, url)
            raise FinalisingElsewhere(request.job_id, url, lease_s)
        async with self._lease(request.job_id, url, lease_s):
            record = await self._get(request, index)
            if record.final_status is None:
                log.info(
                    "job %s image %s: finalising %d regions",
                    request.job_id,
                    url,
                    len(record.regions_done),
                )
                finalising = time.monotonic()
                outcome = await self._finalise(request, index, record, job, only_region)
                self._image_metrics(request, index, job, outcome, time.monotonic() - finalising)
                if not await self._jobs.finish(request.job_id, url, self._worker_id, outcome):
                    log.warning("job %s image %s: finalised elsewhere", request.job_id, url)
                    return
                if outcome.status is Status.FAILED and self._dead_letters is not None:
                    await self._dead_letters.dead_letter_body(
                        request.original_body, describe_outcome(url, outcome)
                    )
                record = await self._get(request, index)
            await self._publish_locked(request, index, record)
            await self._staging.delete(
                request.job_id, index, list(range(1, record.region_count + 1)), record.run
            )

    async def _finalise(
        self,
        request: ImageRequest,
        index: int,
        record: ImageRecord,
        job: ImageJob | None,
        only_region: StagedRegion | None,
    ) -> ImageOutcome:
        try:
            if job is None:
                job = await self._pipeline.plan(request, index)
            if only_region is not None and record.region_count == 1:
                staged = [only_region]
            else:
                staged = [
                    await self._staging.get(request.job_id, index, region_id, record.run)
                    for region_id in range(1, record.region_count + 1)
                ]
            return await self._pipeline.finalise(job, staged, record.start_time)
        except PermanentError as err:
            log.warning("job %s image %d failed: %s", request.job_id, index, err)
            return ImageOutcome(
                Status.FAILED,
                tile_count=record.tile_count,
                failed_tiles=record.tile_count,
                duration_s=time.time() - record.start_time,
                reason=str(err),
            )

    def _image_metrics(
        self,
        request: ImageRequest,
        index: int,
        job: ImageJob | None,
        outcome: ImageOutcome,
        finalise_s: float,
    ) -> None:
        if self._metrics is None:
            return
        dimensions = {
            "Model": request.image_processor.name,
            "InputFormat": job.info.driver if job is not None else "unknown",
        }
        self._metrics.write(
            dimensions,
            image_values(
                outcome.feature_count,
                outcome.failed_tiles,
                outcome.duration_s,
                finalise_s,
                failed=outcome.status is Status.FAILED,
            ),
            {
                "job_id": request.job_id,
                "image_id": f"{request.job_id}:{request.image_urls[index]}",
                "status": outcome.status.value,
            },
        )

    @contextlib.asynccontextmanager
    async def _lease(self, job_id: str, url: str, lease_s: float) -> AsyncIterator[None]:
        """Renew the finalisation lease while the body runs."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(lease_s / 3)
                if not await self._jobs.claim(job_id, url, self._worker_id, lease_s):
                    log.warning("job %s image %s: finalisation lease lost", job_id, url)

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()

    # ---- status -------------------------------------------------------------------------

    async def _get(self, request: ImageRequest, index: int) -> ImageRecord:
        record = await self._jobs.get(request.job_id, request.image_urls[index])
        if record is None:
            raise PermanentError(
                f"job {request.job_id} image {index} has no record: it expired or was never planned"
            )
        return record

    @contextlib.asynccontextmanager
    async def _image_lock(self, job_id: str, url: str) -> AsyncIterator[None]:
        """One lock per image in this process: its regions may end at the same moment here,
        and the lease (held per worker) does not tell them apart. Dropped when unused."""
        key = f"{job_id}:{url}"
        entry = self._locks.setdefault(key, _ImageLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    async def _publish_recorded(self, request: ImageRequest, index: int) -> None:
        """Publish the recorded terminal status unless that was done already."""
        url = request.image_urls[index]
        async with self._image_lock(request.job_id, url):
            await self._publish_locked(request, index, await self._get(request, index))

    async def _publish_locked(self, request: ImageRequest, index: int, record: ImageRecord) -> None:
        """Publish the recorded terminal status unless that was done already.

        Only the lease holder publishes: a worker that finds an outcome recorded but not yet
        published while another holds the lease leaves it to that one (which is publishing
        it, or whose lease will expire).
        """
        outcome = record.outcome()
        if outcome is None or record.published:
            return
        url = request.image_urls[index]
        lease_s = self._settings.visibility_timeout_s
        if not await self._jobs.claim(request.job_id, url, self._worker_id, lease_s):
            return
        await self._status.publish(outcome_event(request.job_id, url, outcome))
        await self._jobs.mark_published(request.job_id, url, record.run)
        log.info("job %s image %s: %s", request.job_id, url, outcome.status)

    async def _republish(self, request: ImageRequest, index: int, record: ImageRecord) -> None:
        """Publish the recorded terminal status again, even if it went out already: the
        request that ended the run was delivered again, and its sender waits for a status."""
        outcome = record.outcome()
        if outcome is None:
            return
        url = request.image_urls[index]
        await self._status.publish(outcome_event(request.job_id, url, outcome))
        if not record.published:
            await self._jobs.mark_published(request.job_id, url, record.run)

    async def _publish_region(
        self,
        request: ImageRequest,
        index: int,
        region_id: int,
        region_count: int,
        record: ImageRecord,
        staged: StagedRegion,
    ) -> None:
        if self._region_status is None:
            return
        url = request.image_urls[index]
        event = region_event(
            request.job_id, url, region_id, region_count, staged, time.time() - record.start_time
        )
        await self._region_status.publish(event)

    async def _report(self, job: ImageJob, region: Region, progress: TileProgress) -> None:
        """IN_PROGRESS every progress interval while the region's tiles run."""
        while True:
            await asyncio.sleep(self._settings.progress_interval_s)
            await self._publish_progress(job, region, progress)

    async def _publish_progress(
        self, job: ImageJob, region: Region, progress: TileProgress
    ) -> None:
        """One IN_PROGRESS event: the region's tiles done out of its total, the tiles failed
        so far (best effort)."""
        event = progress_event(
            job.job_id,
            job.url,
            (region.region_id, len(job.regions)),
            (progress.done, progress.total),
            progress.failures,
        )
        try:
            await self._status.publish(event)
        except (BotoCoreError, ClientError) as err:
            log.warning("job %s: progress update failed: %s", job.job_id, err)

    def _region_message(self, job: ImageJob, region: Region, body: str, run: int) -> str:
        bounds = region.bounds
        return RegionRequest(
            job_id=job.job_id,
            image_index=job.index,
            region_id=region.region_id,
            region_count=len(job.regions),
            region_size_px=job.region_px,
            tile_count=len(region.tiles),
            region_bounds=(bounds.col_off, bounds.row_off, bounds.width, bounds.height),
            image_request=body,
            run=run,
        ).body()
