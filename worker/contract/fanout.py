"""The message that hands one image of a multi-image request to the fleet. Pure: no I/O.

The worker that takes a request of several images keeps the first and sends every other image
to the region queue as an :class:`ImageStart`, which any worker takes (before new requests) and
starts as if the request had named that image alone: plan, record, fan its regions out, run
its first region. Outputs are named as before (``<jobId>_<index>.geojson``).
"""

from __future__ import annotations

import json
from typing import Annotated, Final, Literal

from pydantic import Field

from worker.contract.messages import ImageRequest, WireModel
from worker.contract.parsing import RequestLimits, parse_carrier

IMAGE_START: Final = "imageStart"


class ImageStart(WireModel):
    """Image ``image_index`` of the request ``image_request``, for any worker to start.

    ``submission_id`` is the id of the request's own message, so that the image's run is the
    one that message started (a redelivered request joins it, a new submission starts anew).
    """

    kind: Literal["imageStart"] = IMAGE_START
    job_id: str
    image_index: Annotated[int, Field(ge=0)]
    submission_id: str
    image_request: str

    def body(self) -> str:
        """The message body."""
        return self.model_dump_json(by_alias=True)


def is_image_start(body: str) -> bool:
    """Whether a region queue message is an :class:`ImageStart` (not a region)."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("kind") == IMAGE_START


def parse_image_start(
    body: str | bytes, limits: RequestLimits | None = None
) -> tuple[ImageStart, ImageRequest]:
    """Parse an image start message and the ImageRequest it carries.

    Raises:
        InvalidRequestError: With a message naming the field and the reason.
    """
    start, request = parse_carrier(ImageStart, body, limits)
    return start, request
