"""Ending an image exactly once: finalisation under a lease, FAILED endings, publication.

The worker whose region completes an image's set of regions claims the image (a lease in its
record, renewed while it works) and finalises it: reads every staged region, removes
duplicates, writes the outputs, records the terminal outcome once (a conditional write) and
publishes it, then marks it published and deletes the staged regions. A worker that finds the
lease held elsewhere raises :class:`FinalisingElsewhere`: its message comes back once the lease
would have expired, so a finaliser that died is replaced. Only the lease holder publishes, so a
terminal status goes out once; a redelivered request publishes the recorded one again on
purpose (its sender waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from worker.contract.records import ImageOutcome, ImageRecord, RunPlan
from worker.contract.status import Status
from worker.errors import FinalisingElsewhere, PermanentError
from worker.images import ImageRef
from worker.pipeline import ImageJob
from worker.ports import DeadLetters, JobStore, OutputProgress, Staging
from worker.progress import RecordedProgress
from worker.reporter import Reporter
from worker.reports import deadline_reason, describe_outcome, failed_outcome
from worker.staging import StagedRegion

log = logging.getLogger(__name__)


class FinalisingPipeline(Protocol):
    """What finalisation needs of the image pipeline."""

    async def plan(self, ref: ImageRef, region_px: int | None = None) -> ImageJob:
        """Open and plan the image."""
        ...

    async def finalise(
        self,
        job: ImageJob,
        staged: list[StagedRegion],
        started: float,
        progress: OutputProgress | None = None,
    ) -> ImageOutcome:
        """Remove duplicates over all regions and write the outputs."""
        ...


@dataclass(frozen=True, slots=True)
class FinalisingSettings:
    """What the finaliser is told: its lease, the job deadline, its name in leases."""

    lease_s: float
    job_deadline_s: float
    worker_id: str


@dataclass
class _ImageLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


async def record_of(jobs: JobStore, ref: ImageRef) -> ImageRecord:
    """The image's record.

    Raises:
        PermanentError: If it has none (it expired or was never planned).
    """
    record = await jobs.get(ref.job_id, ref.url)
    if record is None:
        raise PermanentError(
            f"job {ref.job_id} image {ref.index} has no record: it expired or was never planned"
        )
    return record


class Finaliser:
    """Ends images: finalises complete ones, fails the others, publishes their outcome once."""

    def __init__(
        self,
        settings: FinalisingSettings,
        pipeline: FinalisingPipeline,
        jobs: JobStore,
        staging: Staging,
        reporter: Reporter,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        """An image that ends FAILED when it is finalised (every tile failed, the outputs could
        not be written) has its request put in ``dead_letters`` by the worker that finalises
        it: its message was settled long before."""
        self._settings = settings
        self._pipeline = pipeline
        self._jobs = jobs
        self._staging = staging
        self._reporter = reporter
        self._dead_letters = dead_letters
        self._locks: dict[str, _ImageLock] = {}

    # ---- complete images ---------------------------------------------------------------

    async def complete(
        self,
        ref: ImageRef,
        record: ImageRecord,
        job: ImageJob | None = None,
        only_region: StagedRegion | None = None,
    ) -> None:
        """Finalise an image whose regions are all done (unless that is done already).

        Raises:
            FinalisingElsewhere: If another worker holds the lease.
        """
        if record.final_status is not None and record.published:
            return
        async with self._image_lock(ref):
            await self._complete_locked(ref, job, only_region)

    async def _complete_locked(
        self, ref: ImageRef, job: ImageJob | None, only_region: StagedRegion | None
    ) -> None:
        lease_s = self._settings.lease_s
        if not await self._jobs.claim(ref.job_id, ref.url, self._settings.worker_id, lease_s):
            record = await record_of(self._jobs, ref)
            if record.final_status is not None and record.published:
                return
            log.info("job %s image %s: another worker finalises it", ref.job_id, ref.url)
            raise FinalisingElsewhere(ref.job_id, ref.url, lease_s)
        async with self._lease(ref):
            record = await record_of(self._jobs, ref)
            if record.final_status is None:
                if not await self._record_outcome(ref, record, job, only_region):
                    return
                record = await record_of(self._jobs, ref)
            await self._publish_locked(ref, record)

    async def _record_outcome(
        self,
        ref: ImageRef,
        record: ImageRecord,
        job: ImageJob | None,
        only_region: StagedRegion | None,
    ) -> bool:
        """Finalise and record the outcome once; False if another worker recorded it."""
        log.info(
            "job %s image %s: finalising %d regions", ref.job_id, ref.url, len(record.regions_done)
        )
        finalising = time.monotonic()
        outcome, input_format = await self._finalise(ref, record, job, only_region)
        self._reporter.image_metrics(ref, input_format, outcome, time.monotonic() - finalising)
        if not await self._jobs.finish(ref.job_id, ref.url, self._settings.worker_id, outcome):
            log.warning("job %s image %s: finalised elsewhere", ref.job_id, ref.url)
            return False
        if outcome.status is Status.FAILED and self._dead_letters is not None:
            await self._dead_letters.dead_letter_body(
                ref.request.original_body, describe_outcome(ref.url, outcome)
            )
        return True

    async def _finalise(
        self,
        ref: ImageRef,
        record: ImageRecord,
        job: ImageJob | None,
        only_region: StagedRegion | None,
    ) -> tuple[ImageOutcome, str]:
        """The image's outcome and its input format (for the metrics)."""
        try:
            if job is None:
                job = await self._pipeline.plan(ref)
            if only_region is not None and record.region_count == 1:
                staged = [only_region]
            else:
                staged = [
                    await self._staging.get(ref.job_id, ref.index, region_id, record.run)
                    for region_id in range(1, record.region_count + 1)
                ]
            lease = (self._settings.worker_id, self._settings.lease_s)
            progress = RecordedProgress(self._jobs, ref, lease, record.output_progress)
            outcome = await self._pipeline.finalise(job, staged, record.start_time, progress)
        except PermanentError as err:
            log.warning("job %s image %d failed: %s", ref.job_id, ref.index, err)
            driver = job.info.driver if job is not None else "unknown"
            return failed_outcome(record, str(err)), driver
        return outcome, job.info.driver

    @contextlib.asynccontextmanager
    async def _lease(self, ref: ImageRef) -> AsyncIterator[None]:
        """Renew the finalisation lease while the body runs."""
        lease_s, owner = self._settings.lease_s, self._settings.worker_id

        async def renew() -> None:
            while True:
                await asyncio.sleep(lease_s / 3)
                if not await self._jobs.claim(ref.job_id, ref.url, owner, lease_s):
                    log.warning("job %s image %s: finalisation lease lost", ref.job_id, ref.url)

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()

    async def recover(self, ref: ImageRef, record: ImageRecord) -> None:
        """Finish an image that nobody is finishing (its finaliser's lease expired): publish
        its recorded outcome, or finalise it if its regions are all done, or end it FAILED if
        it is past its deadline; then clean up. Anything else is left to its messages.

        Raises:
            FinalisingElsewhere: If another worker holds the lease.
        """
        if record.final_status is not None:
            await self.publish_recorded(ref)
        elif record.complete:
            await self.complete(ref, record)
        elif record.past_deadline():
            await self.fail_recorded(ref, deadline_reason(self._settings.job_deadline_s))

    # ---- failed images -----------------------------------------------------------------

    async def fail(self, ref: ImageRef, reason: str, submission_id: str = "") -> None:
        """End an image FAILED (once), whatever state its record is in."""
        plan = RunPlan(
            ref.request.job_name,
            0,
            0,
            self._settings.job_deadline_s,
            submission_id,
            request_body=ref.request.original_body,
            image_index=ref.index,
        )
        record = await self._jobs.open_image(ref.job_id, ref.url, plan)
        if record.final_status is not None and record.redelivered(submission_id):
            await self.publish_recorded(ref)
            return
        await self.fail_recorded(ref, reason)

    async def fail_recorded(self, ref: ImageRef, reason: str) -> None:
        """End an image that has a record FAILED (once)."""
        async with self._image_lock(ref):
            record = await record_of(self._jobs, ref)
            if record.final_status is None:
                owner = self._settings.worker_id
                if not await self._jobs.claim(ref.job_id, ref.url, owner, self._settings.lease_s):
                    log.info("job %s image %s: another worker is ending it", ref.job_id, ref.url)
                    return
                outcome = failed_outcome(record, reason)
                if not await self._jobs.finish(ref.job_id, ref.url, owner, outcome):
                    return
                record = await record_of(self._jobs, ref)
            await self._publish_locked(ref, record)

    # ---- publication -------------------------------------------------------------------

    async def publish_recorded(self, ref: ImageRef) -> None:
        """Publish the recorded terminal status unless that was done already."""
        async with self._image_lock(ref):
            await self._publish_locked(ref, await record_of(self._jobs, ref))

    async def _publish_locked(self, ref: ImageRef, record: ImageRecord) -> None:
        """Publish the recorded terminal status unless that was done already.

        Only the lease holder publishes: a worker that finds an outcome recorded but not yet
        published while another holds the lease leaves it to that one, and looks again once the
        lease would have expired (:class:`FinalisingElsewhere`).
        """
        outcome = record.outcome()
        if outcome is None:
            return
        if not record.published:
            owner, lease_s = self._settings.worker_id, self._settings.lease_s
            if not await self._jobs.claim(ref.job_id, ref.url, owner, lease_s):
                # Its holder is publishing, or died doing so: this message must come back
                # when the lease would have expired, or the status may never go out.
                raise FinalisingElsewhere(ref.job_id, ref.url, lease_s)
            await self._reporter.outcome(ref, outcome)
            await self._jobs.mark_published(ref.job_id, ref.url, record.run)
            log.info("job %s image %s: %s", ref.job_id, ref.url, outcome.status)
        # Whoever finds the image ended and published clears what its regions staged (the
        # finaliser may have died before it did): deleting is safe to repeat.
        regions = list(range(1, record.region_count + 1))
        await self._staging.delete(ref.job_id, ref.index, regions, record.run)
        await self._jobs.mark_cleaned(ref.job_id, ref.url, record.run)

    async def ended_for(
        self,
        ref: ImageRef,
        record: ImageRecord | None,
        submission_id: str,
    ) -> bool:
        """Whether the image has ended for this request: if so, its recorded status has gone
        out (now, if it had not yet).

        A redelivery of the message that started the run (its receiver died or let it go), or a
        copy this service sent itself to look again later, publishes the recorded status only
        if it has not gone out: a second terminal status would tell the sender the job ended
        twice.
        """
        if record is None or record.final_status is None:
            return False
        if record.redelivered(submission_id):
            log.info(
                "job %s image %s: request delivered again after run %d ended %s",
                ref.job_id,
                ref.url,
                record.run,
                record.final_status,
            )
            await self.publish_recorded(ref)
            return True
        if submission_id:
            return False  # a new submission: opening the image starts its next run
        log.warning("job %s image %s already ended %s", ref.job_id, ref.url, record.final_status)
        await self.publish_recorded(ref)
        return True

    @contextlib.asynccontextmanager
    async def _image_lock(self, ref: ImageRef) -> AsyncIterator[None]:
        """One lock per image in this process: its regions may end at the same moment here,
        and the lease (held per worker) does not tell them apart. Dropped when unused."""
        key = ref.image_id
        entry = self._locks.setdefault(key, _ImageLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]
