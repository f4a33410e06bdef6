"""Images of a request across the fleet: the handler of :class:`ImageStart` messages, and the
region queue's dispatch between them and regions.

An image start is settled like any message (:class:`worker.handlers.Settler`): an image that
cannot be processed has ended FAILED and the request goes to the image dead-letter queue once
for it, as it would had the request named that image alone; a transient failure is tried again.
"""

from __future__ import annotations

import logging

from worker.contract.fanout import is_image_start, parse_image_start
from worker.errors import InvalidRequestError
from worker.handlers import ImageEnder, ImageStarter
from worker.images import ImageRef
from worker.loop import Handler
from worker.ports import DeadLetters
from worker.runner import ImageFailedError
from worker.settling import Settler, Work

log = logging.getLogger(__name__)


class ImageStartHandler:
    """Starts one image of a multi-image request that another worker handed out."""

    def __init__(
        self,
        settler: Settler,
        images: tuple[ImageStarter, ImageEnder],
        dead_letters: DeadLetters,
    ) -> None:
        """Start images with ``images[0]``, fail them with ``images[1]``; put the requests of
        failed images in ``dead_letters`` (the image DLQ)."""
        self._settler = settler
        self._starter, self._ender = images
        self._dead_letters = dead_letters

    async def handle(self, work: Work) -> None:
        """Start the image and settle its message."""
        try:
            start, request = parse_image_start(
                work.message.body, self._settler.settings.request_limits
            )
        except InvalidRequestError as err:
            await self._settler.reject(work, str(err))
            return
        ref = ImageRef(request, start.image_index)

        async def give_up(reason: str) -> None:
            await self._ender.fail(ref, reason, start.submission_id)
            await self._failed(work, ref, reason)

        if (abandoned := self._settler.abandoned(work)) is not None:
            await give_up(abandoned)
            return
        failures: list[str] = []

        async def attempt() -> None:
            try:
                await self._starter.start_image(ref, start.submission_id)
            except ImageFailedError as err:  # the image has ended FAILED
                failures.append(str(err))

        if await self._settler.route(work, ref.job_id, attempt, give_up):
            if failures:
                await self._failed(work, ref, failures[0])
            else:
                await work.queue.delete(work.message)

    async def _failed(self, work: Work, ref: ImageRef, reason: str) -> None:
        """The request to the image DLQ (once for this image), this message deleted."""
        log.warning("job %s image %s failed: %s", ref.job_id, ref.url, reason)
        await self._dead_letters.dead_letter_body(
            ref.request.original_body, reason, work.message.message_id
        )
        await work.queue.delete(work.message)


class RegionQueueHandler:
    """The region queue carries regions and image starts: each goes to its handler."""

    def __init__(self, regions: Handler, images: Handler) -> None:
        """Hand regions to ``regions`` and image starts to ``images``."""
        self._regions = regions
        self._images = images

    async def handle(self, work: Work) -> None:
        """Process one message of the region queue and settle it."""
        handler = self._images if is_image_start(work.message.body) else self._regions
        await handler.handle(work)
