"""Production variant selection for multi-variant SageMaker endpoints.

A job's variant is drawn by CurrentWeight with the job id as the seed, so every image, retry
and worker of a job uses the same variant without sharing state, and jobs spread over the
variants in proportion to their weights.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from types_aiobotocore_sagemaker.client import SageMakerClient

log = logging.getLogger(__name__)

DESCRIBE_TTL_S = 60.0

Variants = list[tuple[str, float]]


def choose_variant(variants: Variants, job_id: str) -> str | None:
    """The variant of a job, drawn by weight; None when there is nothing to choose."""
    weighted = [(name, weight) for name, weight in variants if weight > 0]
    if len(weighted) < 2:  # noqa: PLR2004
        return weighted[0][0] if weighted else None
    names = [name for name, _ in weighted]
    weights = [weight for _, weight in weighted]
    chosen: str = random.Random(job_id).choices(names, weights)[0]
    return chosen


class EndpointDescriptions:
    """DescribeEndpoint (and the endpoint's tags), cached per endpoint for a minute."""

    def __init__(self, client: SageMakerClient) -> None:
        """Describe endpoints through ``client``."""
        self._client = client
        self._cache: dict[str, tuple[float, dict[str, Any], dict[str, str]]] = {}

    async def describe(self, endpoint: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The endpoint's description and tags; None when it cannot be described."""
        cached = self._cache.get(endpoint)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        try:
            reply = await self._client.describe_endpoint(EndpointName=endpoint)
            tagged = await self._client.list_tags(ResourceArn=reply["EndpointArn"])
        except (BotoCoreError, ClientError) as err:
            # Not cached: the endpoint may appear, or the permission be granted, at any time.
            log.warning("cannot describe endpoint %s: %s", endpoint, err)
            return None
        description = dict(reply)
        tags = {t["Key"]: t["Value"] for t in tagged.get("Tags", [])}
        self._cache[endpoint] = (time.monotonic() + DESCRIBE_TTL_S, description, tags)
        return description, tags

    async def variants(self, endpoint: str) -> Variants:
        """(name, CurrentWeight) of the endpoint's variants; [] when it cannot be described."""
        described = await self.describe(endpoint)
        if described is None:
            return []
        return [
            (v["VariantName"], float(v.get("CurrentWeight", 0.0)))
            for v in described[0].get("ProductionVariants", [])
        ]
