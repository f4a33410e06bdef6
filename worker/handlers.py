"""One handler per message kind: image requests and region requests, routed by the error tree.

Routing is the same for both kinds and depends on the kind of error alone
(:mod:`worker.errors`):

* a message that cannot be parsed gets a FAILED status and goes to the dead-letter queue;
* :class:`~worker.errors.PermanentError`: the work is given up at once (an image request's
  images end FAILED, a region's tiles count as failed) and the message is dead-lettered;
* :class:`~worker.errors.RetryableError`: the message is released for another try, and given
  up as above once it has been received ``max_attempts`` times;
* any other error is a bug: it reaches the worker loop, which logs it and leaves the message
  to come back after its visibility timeout (so a bug never loses a message);
* :class:`~worker.errors.FinalisingElsewhere`: the message comes back when the finaliser's
  lease would have expired.

A message whose workers died working on it more often than the fleet's death rate explains, or
whose attempts kept failing with a bug (:mod:`worker.poison`), is given up before any work.
Nothing is deleted without a terminal status or a recorded region.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from worker.capacity import CapacityGate
from worker.contract.fanout import ImageStart
from worker.contract.parsing import parse_image_request
from worker.contract.regions import RegionRequest, parse_region_request
from worker.contract.status import Status, StatusEvent
from worker.errors import InvalidRequestError, RetryableError
from worker.images import ImageRef, images_of
from worker.metrics import MetricsWriter, capacity_wait_values
from worker.policy import check_endpoint, check_image_urls
from worker.ports import MessageSender, StatusPublisher
from worker.runner import ImageFailedError
from worker.settling import Settler, Work

log = logging.getLogger(__name__)


class ImageStarter(Protocol):
    """Starts images (:class:`worker.runner.Runner`)."""

    async def start_image(self, ref: ImageRef, submission_id: str = "") -> None:
        """Plan the image, fan it out, run its first region."""
        ...


class ImageEnder(Protocol):
    """Ends images (:class:`worker.finaliser.Finaliser`)."""

    async def fail(self, ref: ImageRef, reason: str, submission_id: str = "") -> None:
        """End the image FAILED (once)."""
        ...


class RegionWork(Protocol):
    """Runs regions (:class:`worker.runner.Runner`)."""

    async def run_region(self, region_request: RegionRequest, ref: ImageRef) -> None:
        """Run a region another worker planned."""
        ...

    async def give_up_region(
        self, region_request: RegionRequest, ref: ImageRef, reason: str
    ) -> None:
        """Count the region's tiles as failed."""
        ...


class ImageHandler:
    """Image requests: validate, wait for endpoint capacity, start every image."""

    def __init__(
        self,
        settler: Settler,
        images: tuple[ImageStarter, ImageEnder],
        status: StatusPublisher,
        capacity: CapacityGate | None = None,
        metrics: MetricsWriter | None = None,
        fan_out: MessageSender | None = None,
    ) -> None:
        """Start images with ``images[0]``, fail them with ``images[1]``; hold jobs back when
        ``capacity`` says so. With ``fan_out`` (the region queue), the images of a request
        after the first go to the fleet as :class:`~worker.contract.fanout.ImageStart`
        messages."""
        self._settler = settler
        self._starter, self._ender = images
        self._status = status
        self._capacity = capacity
        self._metrics = metrics
        self._fan_out = fan_out

    async def handle(self, work: Work) -> None:
        """Process one image request and settle its message."""
        message, settings = work.message, self._settler.settings
        try:
            request = parse_image_request(message.body, settings.request_limits)
            check_image_urls(request, settings.image_schemes)
            await asyncio.to_thread(check_endpoint, request, settings.endpoint_hosts)
        except InvalidRequestError as err:
            await self._settler.reject(work, str(err))
            return
        refs = images_of(request)
        submission = message.submission_id
        handed_out: set[int] = set()

        async def give_up(reason: str) -> None:
            for ref in refs:
                if ref.index not in handed_out:  # those are settled by their own messages
                    await self._ender.fail(ref, reason, submission)
            await work.queue.dead_letter(message, reason)

        if (abandoned := self._settler.abandoned(work)) is not None:
            await give_up(abandoned)
            return
        if not await self._admitted(work, refs[0]):
            return
        log.info("job %s: %d image(s)", request.job_id, len(refs))
        failures: list[str] = []

        async def start_all() -> None:
            failures.extend(await self._start_all(refs, submission, handed_out))

        if await self._settler.route(work, request.job_id, start_all, give_up):
            if failures:
                await work.queue.dead_letter(message, "; ".join(failures))
            else:
                await work.queue.delete(message)

    async def _start_all(
        self, refs: list[ImageRef], submission: str, handed_out: set[int]
    ) -> list[str]:
        """Start every image (the first here, the others through the fan-out queue if there
        is one); return why images that ended FAILED did."""
        here = refs
        if self._fan_out is not None:
            for ref in refs[1:]:
                await self._fan_out.send(image_start(ref, submission))
                handed_out.add(ref.index)
            here = refs[:1]
        failures = []
        for ref in here:
            try:
                await self._starter.start_image(ref, submission)
            except ImageFailedError as err:  # that image has ended FAILED
                failures.append(str(err))
        return failures

    async def _admitted(self, work: Work, ref: ImageRef) -> bool:
        """Whether the job may start now; if not, it goes back to wait for endpoint capacity.

        A waiting job is sent again with a delay and the received copy deleted, so waiting
        does not count toward the receives that send a failing message to the DLQ.
        """
        if self._capacity is None:
            return True
        request = ref.request
        try:
            admission = await self._capacity.admit(request)
        except RetryableError as err:  # an estimate never blocks a job
            log.warning("job %s: capacity unknown, starting: %s", request.job_id, err)
            return True
        if admission.admitted:
            return True
        endpoint = request.image_processor.name
        reason = admission.describe(endpoint)
        delay_s = self._settler.settings.capacity_retry_s
        log.info("job %s waits %ds for capacity: %s", request.job_id, delay_s, reason)
        await self._status.publish(
            StatusEvent(
                status=Status.IN_PROGRESS,
                job_id=request.job_id,
                description=f"waiting for endpoint capacity ({reason})",
            )
        )
        if self._metrics is not None:
            self._metrics.write({"Model": endpoint}, capacity_wait_values())
        await self._settler.send_again(work, delay_s)
        return False


def image_start(ref: ImageRef, submission_id: str) -> str:
    """The message that hands image ``ref`` of a request (``submission_id``) to the fleet."""
    return ImageStart(
        job_id=ref.job_id,
        image_index=ref.index,
        submission_id=submission_id,
        image_request=ref.request.original_body,
    ).body()


class RegionHandler:
    """Region requests: run the region another worker planned."""

    def __init__(self, settler: Settler, regions: RegionWork) -> None:
        """Run regions through ``regions``."""
        self._settler = settler
        self._regions = regions

    async def handle(self, work: Work) -> None:
        """Process one region request and settle its message."""
        message = work.message
        try:
            region, request = parse_region_request(
                message.body, self._settler.settings.request_limits
            )
        except InvalidRequestError as err:
            await self._settler.reject(work, str(err))
            return
        ref = ImageRef(request, region.image_index)

        async def give_up(reason: str) -> None:
            log.warning("job %s region %d failed: %s", region.job_id, region.region_id, reason)
            await self._regions.give_up_region(region, ref, reason)
            await work.queue.dead_letter(message, f"region {region.region_id}: {reason}")

        if (abandoned := self._settler.abandoned(work)) is not None:
            await give_up(abandoned)
            return
        if message.receive_count > 1:
            await self._settler.tell(
                region.job_id,
                f"region {region.region_id} of image {ref.url} is run again (received"
                f" {message.receive_count} times: its last worker stopped or failed)",
            )

        async def run() -> None:
            await self._regions.run_region(region, ref)

        if await self._settler.route(work, region.job_id, run, give_up):
            await work.queue.delete(message)
