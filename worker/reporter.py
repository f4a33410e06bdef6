"""Reporting an image's life: status messages (image and region topics) and metrics.

Events are built by :mod:`worker.reports` (pure); this module sends them. Progress is best
effort: a status that cannot be sent is logged, never a reason to stop the work. Terminal
statuses are sent by the finaliser (:mod:`worker.finaliser`), which decides when.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from worker.contract.records import FailedTile, ImageOutcome
from worker.contract.status import Status
from worker.errors import RetryableError
from worker.images import ImageRef
from worker.metrics import MetricsWriter, TileStats, image_values, region_values
from worker.ports import StatusPublisher
from worker.reports import outcome_event, progress_event, region_event, started_event
from worker.staging import StagedRegion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reporting:
    """Where an image is reported: image statuses, optional region statuses, metrics."""

    status: StatusPublisher
    region_status: StatusPublisher | None = None
    metrics: MetricsWriter | None = None


class Reporter:
    """Sends the status messages and metrics of images and regions."""

    def __init__(self, reporting: Reporting) -> None:
        """Report through ``reporting``'s publishers and metrics writer."""
        self._status = reporting.status
        self._region_status = reporting.region_status
        self._metrics = reporting.metrics

    async def started(self, ref: ImageRef, tile_count: int, region_count: int, run: int) -> None:
        """STARTED, once per run of an image."""
        await self._status.publish(
            started_event(ref.job_id, ref.url, tile_count, region_count, run)
        )

    async def outcome(self, ref: ImageRef, outcome: ImageOutcome) -> None:
        """The terminal status of an image.

        Raises:
            RetryableError: If it could not be sent.
        """
        await self._status.publish(outcome_event(ref.job_id, ref.url, outcome))

    async def region(
        self,
        ref: ImageRef,
        region: tuple[int, int],
        staged: StagedRegion,
        start_time: float,
    ) -> None:
        """A finished region's status on the region topic (if there is one); ``region`` is
        (id, count)."""
        if self._region_status is None:
            return
        region_id, region_count = region
        event = region_event(
            ref.job_id, ref.url, region_id, region_count, staged, time.time() - start_time
        )
        await self._region_status.publish(event)

    async def progress(
        self,
        ref: ImageRef,
        region: tuple[int, int],
        tiles: tuple[int, int],
        failures: list[FailedTile],
    ) -> None:
        """IN_PROGRESS of a region: ``region`` (id, count), ``tiles`` (done, total), the tiles
        failed so far. Best effort."""
        event = progress_event(ref.job_id, ref.url, region, tiles, failures)
        try:
            await self._status.publish(event)
        except RetryableError as err:
            log.warning("job %s: progress update failed: %s", ref.job_id, err)

    def region_metrics(
        self,
        ref: ImageRef,
        region_id: int,
        dimensions: dict[str, str],
        stats: TileStats,
        tiles_and_seconds: tuple[int, float],
    ) -> None:
        """The metrics of a region's tiles: ``tiles_and_seconds`` is how many ran, how long."""
        if self._metrics is None:
            return
        tiles, seconds = tiles_and_seconds
        self._metrics.write(
            dimensions,
            region_values(stats, tiles, seconds),
            {"job_id": ref.job_id, "image_id": ref.image_id, "region_id": str(region_id)},
        )

    def image_metrics(
        self, ref: ImageRef, input_format: str, outcome: ImageOutcome, finalise_s: float
    ) -> None:
        """The metrics of a finalised image."""
        if self._metrics is None:
            return
        self._metrics.write(
            {"Model": ref.request.image_processor.name, "InputFormat": input_format},
            image_values(
                outcome.feature_count,
                outcome.failed_tiles,
                outcome.duration_s,
                finalise_s,
                failed=outcome.status is Status.FAILED,
            ),
            {"job_id": ref.job_id, "image_id": ref.image_id, "status": outcome.status.value},
        )
