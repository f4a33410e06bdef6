"""The region message: a region of an image for any worker of the fleet, sent by the worker that
planned the image to the region queue. It carries the original ImageRequest body."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from worker.contract.messages import ImageRequest, WireModel
from worker.contract.parsing import RequestLimits, parse_carrier
from worker.errors import InvalidRequestError

MAX_SQS_MESSAGE_BYTES = 256 * 1024
REGION_ENVELOPE_BYTES = 2 * 1024


class RegionRequest(WireModel):
    """A region of an image for any worker: sent by the planning worker to the region queue.

    It carries the original ImageRequest body, so the worker that takes it validates and plans
    exactly what the planner did, and the run of the image it belongs to (messages sent before
    runs were counted parse as run 1): a region of an earlier run is acknowledged and ignored.
    """

    job_id: str
    image_index: Annotated[int, Field(ge=0)]
    region_id: Annotated[int, Field(ge=1)]
    region_count: Annotated[int, Field(ge=1)]
    region_size_px: Annotated[int, Field(ge=1)]
    tile_count: Annotated[int, Field(ge=1)]
    region_bounds: tuple[int, int, int, int]  # col, row, width, height in image pixels
    image_request: str
    run: Annotated[int, Field(ge=1)] = 1

    def body(self) -> str:
        """The message body."""
        return self.model_dump_json(by_alias=True)


def parse_region_request(
    body: str | bytes, limits: RequestLimits | None = None
) -> tuple[RegionRequest, ImageRequest]:
    """Parse a region message and the ImageRequest it carries.

    Raises:
        InvalidRequestError: With a message naming the field and the reason.
    """
    region, request = parse_carrier(RegionRequest, body, limits)
    if region.region_id > region.region_count:
        raise InvalidRequestError(
            f"regionId {region.region_id} is beyond regionCount {region.region_count}"
        )
    return region, request
