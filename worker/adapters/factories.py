"""The endpoint and sink factories the image pipeline asks per request
(:class:`worker.ports.EndpointFactory`, :class:`worker.ports.SinkFactory`): adapters over the
worker's shared, pooled clients, and clients under the roles a request names."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp

from worker.adapters.credentials import RoleClients
from worker.adapters.endpoints import HttpEndpoint, SageMakerEndpoint
from worker.adapters.sinks import KinesisSink, S3Sink
from worker.adapters.variants import EndpointDescriptions, choose_variant
from worker.contract.messages import ImageRequest, KinesisOutput, ProcessorType
from worker.gradient import GradientLimiter
from worker.limiter import AimdLimiter, Limiter
from worker.ports import ModelEndpoint, Sink
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_kinesis.client import KinesisClient
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_sagemaker_runtime.client import SageMakerRuntimeClient

log = logging.getLogger(__name__)


class Endpoints:
    """Endpoint factory over shared, pooled clients; SageMaker roles through ``roles``."""

    def __init__(
        self,
        settings: Settings,
        http: aiohttp.ClientSession,
        sagemaker: SageMakerRuntimeClient,
        roles: RoleClients,
        variants: EndpointDescriptions,
    ) -> None:
        """Share ``http`` and ``sagemaker`` between requests."""
        self._settings = settings
        self._http = http
        self._sagemaker = sagemaker
        self._roles = roles
        self._variants = variants
        self._limiters: dict[str, Limiter] = {}

    def _limiter(self, endpoint: str) -> Limiter:
        """One limit per endpoint, shared by every job this worker runs on it: one that follows
        the endpoint's latency (``gradient``), or a fixed one that halves on throttling only
        (``aimd``)."""
        limiter = self._limiters.get(endpoint)
        if limiter is None:
            maximum = self._settings.endpoint_concurrency
            if self._settings.endpoint_limiter == "aimd":
                limiter = AimdLimiter(maximum)
            else:
                limiter = GradientLimiter(maximum, self._settings.endpoint_concurrency_floor)
            self._limiters[endpoint] = limiter
        return limiter

    async def for_request(self, request: ImageRequest) -> ModelEndpoint:
        """The request's endpoint with its parameters."""
        processor = request.image_processor
        parameters = dict(request.image_processor_parameters)
        if processor.type is ProcessorType.HTTP_ENDPOINT:
            return HttpEndpoint(
                self._http,
                processor.name,
                parameters.get("CustomAttributes"),
                self._settings.endpoint_timeout_s,
                self._settings.tile_retries,
                self._limiter(processor.name),
                self._settings.max_reply_bytes,
            )
        if "TargetVariant" not in parameters:
            variants = await self._variants.variants(processor.name)
            variant = choose_variant(variants, request.job_id) if len(variants) > 1 else None
            if variant is not None:
                parameters["TargetVariant"] = variant
                log.info("job %s: endpoint %s variant %s", request.job_id, processor.name, variant)
        sagemaker = self._sagemaker
        if processor.assumed_role:
            sagemaker = await self._roles.client("sagemaker-runtime", processor.assumed_role)
        return SageMakerEndpoint(
            sagemaker,
            processor.name,
            parameters,
            self._settings.tile_retries,
            self._limiter(processor.name),
            self._settings.max_reply_bytes,
        )


class Sinks:
    """Sink factory over shared clients; outputs with a role get clients under that role."""

    def __init__(
        self,
        clients: tuple[S3Client, KinesisClient],
        roles: RoleClients,
        s3_acl: str = "",
        kinesis_request_records: int = 500,
    ) -> None:
        """Share the S3 and Kinesis ``clients`` between requests; assume roles through
        ``roles``; write S3 objects with the canned ACL ``s3_acl`` ("" for none) and at most
        ``kinesis_request_records`` records per PutRecords call."""
        self._s3, self._kinesis = clients
        self._roles = roles
        self._s3_acl = s3_acl
        self._request_records = kinesis_request_records

    async def for_request(self, request: ImageRequest) -> list[Sink]:
        """The request's outputs (legacy outputBucket/outputPrefix included)."""
        sinks: list[Sink] = []
        for output in request.all_outputs:
            if isinstance(output, KinesisOutput):
                kinesis = self._kinesis
                if output.assumed_role:
                    kinesis = await self._roles.client("kinesis", output.assumed_role)
                sinks.append(
                    KinesisSink(kinesis, output.stream, output.batch_size, self._request_records)
                )
            else:
                s3 = self._s3
                if output.role:
                    s3 = await self._roles.client("s3", output.role)
                sinks.append(S3Sink(s3, output.bucket, output.prefix, self._s3_acl))
        return sinks
