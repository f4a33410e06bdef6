"""The status events of an image: terminal, per region and progress. Pure: no I/O.

Every event that reports failed tiles carries their count (``failed_tile_count``) and their
windows (``failed_tiles``, bounded when published: see :mod:`worker.contract.status`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tiling.grid import Window
from worker.contract.records import FailedTile, ImageOutcome, ImageRecord
from worker.contract.status import MAX_LISTED_FAILED_TILES, Status, StatusEvent
from worker.staging import StagedRegion

DESCRIBED_FAILED_TILES = 5


def windows_of(tiles: Sequence[FailedTile]) -> tuple[Window, ...]:
    """The windows of the first tiles a status can list."""
    return tuple(t.window for t in tiles[:MAX_LISTED_FAILED_TILES])


def describe_outcome(url: str, outcome: ImageOutcome) -> str:
    """The description of an image's terminal status."""
    counts = f"{outcome.tile_count} tiles ({outcome.failed_tiles} failed)"
    if outcome.status is Status.FAILED:
        text = f"image {url} failed: {outcome.reason}"
        if outcome.tile_count:
            text += f"; {counts}"
    else:
        text = (
            f"image {url}: {counts}, {outcome.feature_count} features in {outcome.duration_s:.1f}s"
        )
    if outcome.failed_tile_list:
        shown = "; ".join(t.describe() for t in outcome.failed_tile_list[:DESCRIBED_FAILED_TILES])
        more = outcome.failed_tiles - min(len(outcome.failed_tile_list), DESCRIBED_FAILED_TILES)
        text += f"; failed tiles (row,col size): {shown}" + (
            f" and {more} more" if more > 0 else ""
        )
    return text


def started_event(
    job_id: str, url: str, tile_count: int, region_count: int, run: int
) -> StatusEvent:
    """STARTED, with the image's tile count (and its run, from the second on)."""
    description = f"processing image {url}: {tile_count} tiles in {region_count} region(s)"
    if run > 1:
        description += f" (run {run}: the job had ended and was submitted again)"
    return StatusEvent(
        status=Status.STARTED,
        job_id=job_id,
        description=description,
        image_url=url,
        tile_count=tile_count,
    )


def outcome_event(job_id: str, url: str, outcome: ImageOutcome) -> StatusEvent:
    """The terminal status of an image."""
    return StatusEvent(
        status=outcome.status,
        job_id=job_id,
        description=describe_outcome(url, outcome),
        image_url=url,
        processing_duration_s=outcome.duration_s,
        failed_tile_count=outcome.failed_tiles,
        failed_tiles=windows_of(outcome.failed_tile_list),
    )


def region_event(
    job_id: str,
    url: str,
    region_id: int,
    region_count: int,
    staged: StagedRegion,
    duration_s: float,
) -> StatusEvent:
    """The status of a finished region: SUCCESS, PARTIAL, or FAILED if no tile gave results."""
    if staged.failed_count == 0:
        status = Status.SUCCESS
    elif staged.failed_count >= staged.tile_count:
        status = Status.FAILED
    else:
        status = Status.PARTIAL
    return StatusEvent(
        status=status,
        job_id=job_id,
        description=(
            f"region {region_id}/{region_count}: {staged.tile_count} tiles"
            f" ({staged.failed_count} failed), {len(staged.table)} detections"
        ),
        image_url=url,
        region_id=str(region_id),
        processing_duration_s=duration_s,
        failed_tile_count=staged.failed_count,
        failed_tiles=windows_of(staged.failed_tiles),
    )


def progress_event(
    job_id: str,
    url: str,
    region: tuple[int, int],
    tiles: tuple[int, int],
    failures: Sequence[FailedTile],
) -> StatusEvent:
    """IN_PROGRESS of a region: ``region`` is (id, count), ``tiles`` (done, total); the tiles
    failed so far."""
    (region_id, region_count), (done, total) = region, tiles
    return StatusEvent(
        status=Status.IN_PROGRESS,
        job_id=job_id,
        description=f"region {region_id}/{region_count}: {done}/{total} tiles done",
        image_url=url,
        region_id=str(region_id),
        failed_tile_count=len(failures),
        failed_tiles=windows_of(failures),
        tiles_done=done,
        tile_count=total,
    )


def all_tiles_failed(staged: Sequence[StagedRegion], started: float) -> ImageOutcome | None:
    """The FAILED outcome of an image none of whose tiles gave results, with the counts and
    the failed tiles; None if some tile did."""
    failures = tuple(f for s in staged for f in s.failed_tiles)
    failed = sum(s.failed_count for s in staged)
    tile_count = sum(s.tile_count for s in staged)
    if not tile_count or failed < tile_count:
        return None
    first = failures[0].reason if failures else "no tile was processed"
    return ImageOutcome(
        status=Status.FAILED,
        tile_count=tile_count,
        failed_tiles=failed,
        duration_s=time.time() - started,
        reason=f"all {failed} tiles failed; first: {first}",
        failed_tile_list=failures,
    )


def failed_outcome(record: ImageRecord, reason: str) -> ImageOutcome:
    """FAILED before any output: every planned tile counts as failed."""
    return ImageOutcome(
        Status.FAILED,
        tile_count=record.tile_count,
        failed_tiles=record.tile_count,
        duration_s=time.time() - record.start_time,
        reason=reason,
    )


def deadline_reason(limit_s: float) -> str:
    """Why an image that ran out of time ended FAILED."""
    return (
        f"job deadline exceeded: not finished {limit_s:.0f}s after it started"
        " (MODELRUNNER_JOB_DEADLINE_S)"
    )
