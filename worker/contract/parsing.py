"""Reading ImageRequest message bodies: JSON, the request model, the limits, one clear error.

Every failure is an :class:`~worker.errors.InvalidRequestError` whose message names the field
(camelCase, as on the wire) and the reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Protocol, TypeVar

import orjson
import shapely
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from worker.contract.messages import ImageRequest
from worker.errors import InvalidRequestError

log = logging.getLogger(__name__)


def describe_validation_error(err: ValidationError) -> str:
    """Turn a pydantic error into one line naming each field (camelCase) and the reason."""
    parts = []
    for item in err.errors(include_url=False):
        where = ".".join(to_camel(str(p)) if isinstance(p, str) else str(p) for p in item["loc"])
        reason = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {reason}" if where else reason)
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one request may ask for (``MODELRUNNER_MAX_*`` settings)."""

    max_message_bytes: int = 254 * 1024
    max_tile_size_px: int = 4096
    max_images: int = 100
    max_roi_vertices: int = 10_000
    max_feature_properties_bytes: int = 64 * 1024


def limits_from(source: object) -> RequestLimits:
    """The limits whose values ``source`` (a settings object) holds under the same names."""
    names = [field.name for field in dataclasses.fields(RequestLimits)]
    return RequestLimits(**{name: getattr(source, name) for name in names})


def check_limits(request: ImageRequest, limits: RequestLimits) -> None:
    """Refuse a request over a limit, naming the field and the limit.

    Raises:
        InvalidRequestError: If a limit is exceeded.
    """
    over: list[str] = []
    if request.image_processor_tile_size > limits.max_tile_size_px:
        over.append(
            f"imageProcessorTileSize {request.image_processor_tile_size} is over the limit"
            f" of {limits.max_tile_size_px} px"
        )
    if len(request.image_urls) > limits.max_images:
        over.append(
            f"imageUrls has {len(request.image_urls)} images; the limit is {limits.max_images}"
        )
    if request.region_of_interest is not None:
        vertices = int(shapely.get_num_coordinates(shapely.from_wkt(request.region_of_interest)))
        if vertices > limits.max_roi_vertices:
            over.append(
                f"regionOfInterest has {vertices} vertices; the limit is {limits.max_roi_vertices}"
            )
    properties_bytes = len(json.dumps(request.feature_properties))
    if properties_bytes > limits.max_feature_properties_bytes:
        over.append(
            f"featureProperties is {properties_bytes} bytes; the limit is"
            f" {limits.max_feature_properties_bytes}"
        )
    if over:
        raise InvalidRequestError("request over a limit: " + "; ".join(over))


def parse_image_request(body: str | bytes, limits: RequestLimits | None = None) -> ImageRequest:
    """Parse and validate an ImageRequest message body.

    Raises:
        InvalidRequestError: With a message naming the field and the reason.
    """
    limits = limits or RequestLimits()
    size = len(body.encode() if isinstance(body, str) else body)
    if size > limits.max_message_bytes:
        raise InvalidRequestError(
            f"message body is {size} bytes; the limit is {limits.max_message_bytes}"
        )
    try:
        raw = orjson.loads(body)  # bounded nesting depth, unlike json.loads
    except orjson.JSONDecodeError as err:
        raise InvalidRequestError(f"message body is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise InvalidRequestError("message body must be a JSON object (an ImageRequest)")
    known = set(ImageRequest.model_fields) | {to_camel(name) for name in ImageRequest.model_fields}
    unknown = sorted(set(raw) - known)
    if unknown:
        log.info("ignoring unknown ImageRequest keys: %s", ", ".join(unknown))
    try:
        request = ImageRequest.model_validate(raw)
    except ValidationError as err:
        raise InvalidRequestError(
            f"invalid ImageRequest: {describe_validation_error(err)}"
        ) from err
    check_limits(request, limits)
    request._body = body if isinstance(body, str) else body.decode("utf-8", "replace")
    return request


def job_id_of(body: str | bytes) -> str | None:
    """Best-effort job id of a message that failed validation (for its FAILED status)."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    job_id = raw.get("jobId") if isinstance(raw, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


class CarriesRequest(Protocol):
    """A fleet message that carries its ImageRequest body for one image of it."""

    job_id: str
    image_index: int
    image_request: str


M = TypeVar("M", bound=BaseModel)


def parse_carrier(
    model: type[M], body: str | bytes, limits: RequestLimits | None = None
) -> tuple[M, ImageRequest]:
    """Parse a fleet message (``model``) and the ImageRequest it carries, checked to match.

    Raises:
        InvalidRequestError: With a message naming the field and the reason.
    """
    name = model.__name__
    try:
        message = model.model_validate_json(body)
    except ValidationError as err:
        raise InvalidRequestError(f"invalid {name}: {describe_validation_error(err)}") from err
    carried: CarriesRequest = message  # type: ignore[assignment]
    request = parse_image_request(carried.image_request, limits)
    if request.job_id != carried.job_id or carried.image_index >= len(request.image_urls):
        raise InvalidRequestError(
            f"{name} for job {carried.job_id} image {carried.image_index} does not match"
            f" its imageRequest (job {request.job_id}, {len(request.image_urls)} images)"
        )
    return message, request
