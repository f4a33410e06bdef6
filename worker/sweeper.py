"""The sweep: finishing the images that no message will bring back.

An image's messages normally carry it to its end: a finaliser that dies leaves its message
undeleted, and whoever gets it next takes over the expired lease. But a message can go without
its image ending (it was dead-lettered after too many receives, or settled by a worker that
found the lease held and died before sending it again), so nothing may depend on a particular
message coming back. Every worker therefore sweeps now and then: it asks the job store for the
images that are not yet published and cleaned up and whose finalisation lease has expired (a
sparse index holds only those being finalised), and finishes each from its record, which keeps
the request: the recorded outcome is published, a complete image is finalised, an image past
its deadline ends FAILED, and the staged regions are deleted. The lease keeps two sweepers, or a
sweeper and a message, from finishing the same image twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from worker.contract.parsing import RequestLimits, parse_image_request
from worker.contract.records import ImageRecord
from worker.errors import FinalisingElsewhere, PermanentError, RetryableError
from worker.images import ImageRef
from worker.ports import JobStore

log = logging.getLogger(__name__)


class Recovering(Protocol):
    """Finishes images nobody is finishing (:class:`worker.finaliser.Finaliser`)."""

    async def recover(self, ref: ImageRef, record: ImageRecord) -> None:
        """Publish, finalise or fail the image, as its record says, and clean up."""
        ...


class Sweeper:
    """Finds images whose finalisation stalled and finishes them."""

    def __init__(
        self,
        jobs: JobStore,
        finaliser: Recovering,
        limits: RequestLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Find images in ``jobs``, finish them with ``finaliser``; read the recorded requests
        within ``limits``."""
        self._jobs = jobs
        self._finaliser = finaliser
        self._limits = limits
        self._clock = clock

    async def sweep(self) -> int:
        """Finish every stalled image once; return how many were found.

        Raises:
            RetryableError: If the job store cannot be read.
        """
        stalled = await self._jobs.stalled(self._clock())
        for job_id, url in stalled:
            try:
                await self._recover(job_id, url)
            except FinalisingElsewhere:
                log.info("sweep: job %s image %s: another worker took it", job_id, url)
            except (RetryableError, PermanentError) as err:
                log.warning("sweep: job %s image %s: %s", job_id, url, err)
        return len(stalled)

    async def _recover(self, job_id: str, url: str) -> None:
        record = await self._jobs.get(job_id, url)
        if record is None:
            return
        if not record.request_body:  # a record written before records kept their request
            log.warning("sweep: job %s image %s: no request recorded, left", job_id, url)
            return
        ref = ImageRef(parse_image_request(record.request_body, self._limits), record.image_index)
        if ref.url != url:
            log.warning("sweep: job %s image %s: the recorded request differs", job_id, url)
            return
        log.info(
            "sweep: job %s image %s: its finaliser's lease expired (outcome %s, published %s)",
            job_id,
            url,
            record.final_status,
            record.published,
        )
        await self._finaliser.recover(ref, record)
