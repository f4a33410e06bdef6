"""Capacity-based throttling: start an image only when its endpoint has room for it.

An endpoint's capacity is the number of requests it can work on at once: for SageMaker, the
sum over its variants of serverless ``MaxConcurrency``, or instance count x the endpoint's
``osml:instance-concurrency`` tag (a setting when untagged); for HTTP endpoints, a setting.
The load on it is the sum of the loads the images now active on it recorded when they started
(``min(tiles, endpoint concurrency x regions)``: what the fleet can actually send for that image),
read through a sparse index of active images, never a table scan.

An image is admitted when nothing else is active on the endpoint (so an image larger than the
endpoint still runs), or when the load plus what the job adds stays within the target
percentage of the capacity. A job that is not admitted waits in its queue and comes back; it
does not hold up jobs for other endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from worker.contract.messages import ImageRequest, ProcessorType
from worker.settings import Settings

log = logging.getLogger(__name__)

INSTANCE_CONCURRENCY_TAG = "osml:instance-concurrency"


def sagemaker_capacity(
    description: Mapping[str, Any],
    tags: Mapping[str, str],
    default_instance_concurrency: int,
    variant: str | None = None,
) -> int:
    """Requests a SageMaker endpoint (or one of its variants) can serve at once."""
    per_instance = default_instance_concurrency
    tagged = tags.get(INSTANCE_CONCURRENCY_TAG, "").strip()
    if tagged.isdigit() and int(tagged) > 0:
        per_instance = int(tagged)
    elif tagged:
        log.warning("ignoring %s=%r: not a positive integer", INSTANCE_CONCURRENCY_TAG, tagged)
    total = 0
    for production in description.get("ProductionVariants", []):
        if variant is not None and production.get("VariantName") != variant:
            continue
        serverless = production.get("CurrentServerlessConfig")
        if serverless:
            total += int(serverless.get("MaxConcurrency", 0))
        else:
            total += int(production.get("CurrentInstanceCount", 0)) * per_instance
    return total


def image_load(tile_count: int, region_count: int, concurrency: int) -> int:
    """Requests an image can have in flight at once: ``concurrency`` per region being worked."""
    return max(1, min(tile_count, concurrency * region_count))


def admits(capacity: int, target_percent: float, active_load: int, added_load: int) -> bool:
    """Whether a job adding ``added_load`` fits next to ``active_load``."""
    if active_load <= 0:
        return True
    return active_load + added_load <= capacity * target_percent / 100.0


@dataclass(frozen=True, slots=True)
class Admission:
    """The capacity decision for one job."""

    admitted: bool
    capacity: int | None
    active_load: int
    added_load: int

    def describe(self, endpoint: str) -> str:
        """Why the job waits (or runs), for status messages and logs."""
        return (
            f"endpoint {endpoint}: load {self.active_load} + {self.added_load}"
            f" of capacity {self.capacity}"
        )


class EndpointDescriptions(Protocol):
    """DescribeEndpoint and its tags, cached (:mod:`worker.adapters.variants`)."""

    async def describe(self, endpoint: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The endpoint's description and tags; None if it cannot be described."""
        ...


class ActiveLoad(Protocol):
    """Reads the load the active images put on an endpoint."""

    async def active_load(self, endpoint: str, except_job: str) -> int:
        """Sum of the recorded loads of the images active on ``endpoint``, other jobs only."""
        ...


class CapacityGate:
    """Decides whether a job may start now on its endpoint."""

    def __init__(
        self, settings: Settings, descriptions: EndpointDescriptions | None, jobs: ActiveLoad
    ) -> None:
        """Estimate capacities from ``descriptions`` and loads from ``jobs``."""
        self._settings = settings
        self._descriptions = descriptions
        self._jobs = jobs

    async def capacity(self, request: ImageRequest) -> int | None:
        """The endpoint's capacity; None when it cannot be known (the job is not held back)."""
        processor = request.image_processor
        if processor.type is ProcessorType.HTTP_ENDPOINT:
            return self._settings.http_endpoint_capacity
        if self._descriptions is None or processor.assumed_role:
            return None  # another account's endpoint: not described with our credentials
        described = await self._descriptions.describe(processor.name)
        if described is None:
            return None
        variant = request.image_processor_parameters.get("TargetVariant")
        return sagemaker_capacity(
            described[0],
            described[1],
            self._settings.default_instance_concurrency,
            str(variant) if variant else None,
        )

    async def admit(self, request: ImageRequest) -> Admission:
        """Whether ``request`` may start now."""
        added = self._settings.endpoint_concurrency
        capacity = await self.capacity(request)
        if capacity is None:
            return Admission(True, None, 0, added)
        active = await self._jobs.active_load(request.image_processor.name, request.job_id)
        allowed = admits(capacity, self._settings.capacity_target_percent, active, added)
        return Admission(allowed, capacity, active, added)
