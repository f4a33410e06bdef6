"""Composition root: build the clients once, wire the ports, run the loop until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.session import get_session

from worker.capacity import CapacityGate
from worker.coordinator import Coordinator, Reporting
from worker.credentials import RoleClients
from worker.endpoints import HttpEndpoint, ModelEndpoint, SageMakerEndpoint
from worker.gradient import GradientLimiter
from worker.jobstore import DynamoJobStore
from worker.limiter import AimdLimiter, Limiter
from worker.loop import Worker
from worker.messages import ImageRequest, KinesisOutput, ProcessorType
from worker.metrics import JsonFormatter, MetricsWriter
from worker.pipeline import ImagePipeline
from worker.publish import LogStatusPublisher, SnsStatusPublisher
from worker.queue import SqsQueue
from worker.readahead import ClientMaker, ReadAhead, ReadAheadSettings
from worker.settings import Settings
from worker.sinks import KinesisSink, S3Sink, Sink
from worker.staging import S3Staging
from worker.status import StatusPublisher
from worker.variants import EndpointDescriptions, choose_variant

if TYPE_CHECKING:
    from types_aiobotocore_kinesis.client import KinesisClient
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_sagemaker_runtime.client import SageMakerRuntimeClient
    from types_aiobotocore_sqs.client import SQSClient

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
        self, s3: S3Client, kinesis: KinesisClient, roles: RoleClients, s3_acl: str = ""
    ) -> None:
        """Share ``s3`` and ``kinesis`` between requests; assume roles through ``roles``;
        write S3 objects with the canned ACL ``s3_acl`` ("" for none)."""
        self._s3 = s3
        self._kinesis = kinesis
        self._roles = roles
        self._s3_acl = s3_acl

    async def for_request(self, request: ImageRequest) -> list[Sink]:
        """The request's outputs (legacy outputBucket/outputPrefix included)."""
        sinks: list[Sink] = []
        for output in request.all_outputs:
            if isinstance(output, KinesisOutput):
                kinesis = self._kinesis
                if output.assumed_role:
                    kinesis = await self._roles.client("kinesis", output.assumed_role)
                sinks.append(KinesisSink(kinesis, output.stream, output.batch_size))
            else:
                s3 = self._s3
                if output.role:
                    s3 = await self._roles.client("s3", output.role)
                sinks.append(S3Sink(s3, output.bucket, output.prefix, self._s3_acl))
        return sinks


def _read_ahead(settings: Settings, s3: S3Client, make_client: ClientMaker) -> ReadAhead | None:
    """The read-ahead of ``s3://`` images, None when switched off."""
    if not settings.read_ahead:
        return None
    return ReadAhead(
        s3,
        make_client,
        ReadAheadSettings(
            range_bytes=settings.read_range_mb << 20,
            budget_bytes=settings.read_ahead_mb << 20,
            requests=settings.read_requests,
            wait_s=settings.image_read_timeout_s,
        ),
    )


async def _queue_url(sqs: SQSClient, name_or_url: str) -> str:
    if name_or_url.startswith(("https://", "http://")):
        return name_or_url
    reply = await sqs.get_queue_url(QueueName=name_or_url)
    return reply["QueueUrl"]


async def serve(settings: Settings) -> None:
    """Run the worker until SIGTERM or SIGINT; then finish or release the work in hand."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    session = get_session()
    client_args: dict[str, Any] = {"region_name": settings.aws_region}
    async with AsyncExitStack() as stack:
        sqs = await stack.enter_async_context(session.create_client("sqs", **client_args))
        sns = await stack.enter_async_context(session.create_client("sns", **client_args))
        s3 = await stack.enter_async_context(session.create_client("s3", **client_args))
        kinesis = await stack.enter_async_context(session.create_client("kinesis", **client_args))
        dynamodb = await stack.enter_async_context(session.create_client("dynamodb", **client_args))
        sagemaker = await stack.enter_async_context(
            session.create_client("sagemaker-runtime", **client_args)
        )
        http = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=settings.endpoint_concurrency)
            )
        )
        sts = await stack.enter_async_context(session.create_client("sts", **client_args))
        control = await stack.enter_async_context(session.create_client("sagemaker", **client_args))
        roles = RoleClients(session.create_client, sts, settings.aws_region)
        stack.push_async_callback(roles.close)
        executor = stack.enter_context(
            ThreadPoolExecutor(settings.encode_threads, thread_name_prefix="tiles")
        )
        status: StatusPublisher = (
            SnsStatusPublisher(sns, settings.status_topic_arn)
            if settings.status_topic_arn
            else LogStatusPublisher()
        )
        image_queue = SqsQueue(
            sqs,
            await _queue_url(sqs, settings.image_queue),
            await _queue_url(sqs, settings.image_dlq),
        )
        region_queue = SqsQueue(
            sqs,
            await _queue_url(sqs, settings.region_queue),
            await _queue_url(sqs, settings.region_dlq),
        )
        descriptions = EndpointDescriptions(control)
        pipeline = ImagePipeline(
            settings,
            Endpoints(settings, http, sagemaker, roles, descriptions),
            Sinks(s3, kinesis, roles, settings.s3_output_acl),
            executor,
            roles,
            _read_ahead(
                settings, s3, lambda **keys: session.create_client("s3", **client_args, **keys)
            ),
        )
        metrics = MetricsWriter() if settings.metrics else None
        jobs = DynamoJobStore(
            dynamodb, settings.job_table, settings.job_record_ttl_days, settings.endpoint_index
        )
        capacity = None
        if settings.capacity_throttling:
            capacity = CapacityGate(settings, descriptions, jobs)
        coordinator = Coordinator(
            settings,
            pipeline,
            jobs,
            S3Staging(s3, settings.staging_bucket, settings.staging_prefix, executor),
            region_queue,
            Reporting(
                status,
                (
                    SnsStatusPublisher(sns, settings.region_status_topic_arn)
                    if settings.region_status_topic_arn
                    else None
                ),
                metrics,
            ),
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            dead_letters=image_queue,
        )
        await Worker(
            settings, image_queue, region_queue, coordinator, status, stop, metrics, capacity
        ).run()


def main() -> None:
    """Entry point of ``python -m worker``."""
    settings = Settings()
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("botocore").setLevel(logging.WARNING)
    # GDAL sizes its block cache once, from this variable, at first use.
    os.environ["GDAL_CACHEMAX"] = str(settings.gdal_cache_mb)
    # /vsis3 reads: a stalled connection fails the read (then the tile) instead of hanging.
    timeout = str(max(1, round(settings.image_read_timeout_s)))
    os.environ.setdefault("GDAL_HTTP_TIMEOUT", timeout)
    os.environ.setdefault("GDAL_HTTP_CONNECTTIMEOUT", str(min(10, int(timeout))))
    os.environ.setdefault("GDAL_HTTP_MAX_RETRY", "3")
    os.environ.setdefault("GDAL_HTTP_RETRY_DELAY", "1")
    asyncio.run(serve(settings))
