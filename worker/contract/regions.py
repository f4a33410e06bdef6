"""The region message: a region of an image for any worker of the fleet, sent by the worker that
planned the image to the region queue. It carries the original ImageRequest body."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationError

from worker.contract.messages import ImageRequest, WireModel
from worker.contract.parsing import RequestLimits, describe_validation_error, parse_image_request
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
    try:
        region = RegionRequest.model_validate_json(body)
    except ValidationError as err:
        raise InvalidRequestError(
            f"invalid RegionRequest: {describe_validation_error(err)}"
        ) from err
    request = parse_image_request(region.image_request, limits)
    if request.job_id != region.job_id or region.image_index >= len(request.image_urls):
        raise InvalidRequestError(
            f"RegionRequest for job {region.job_id} image {region.image_index} does not match"
            f" its imageRequest (job {request.job_id}, {len(request.image_urls)} images)"
        )
    if region.region_id > region.region_count:
        raise InvalidRequestError(
            f"regionId {region.region_id} is beyond regionCount {region.region_count}"
        )
    return region, request
