"""Composition root: build the clients once, wire the ports, run the loop until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from aiobotocore.session import get_session

from tiling.gdalenv import start_without_nitf_spec
from worker.adapters.credentials import RoleClients
from worker.adapters.dynamodb import DynamoJobStore
from worker.adapters.factories import Endpoints, Sinks
from worker.adapters.holds import DynamoHoldStore
from worker.adapters.s3_staging import S3Staging
from worker.adapters.s3ranges import ClientMaker, S3Objects
from worker.adapters.sns import LogStatusPublisher, SnsStatusPublisher
from worker.adapters.sqs import SqsQueue
from worker.adapters.variants import EndpointDescriptions
from worker.capacity import CapacityGate
from worker.fanout import ImageStartHandler, RegionQueueHandler
from worker.finaliser import Finaliser
from worker.handlers import ImageHandler, RegionHandler
from worker.holding import Holder
from worker.loop import Queues, Worker
from worker.metrics import JsonFormatter, MetricsWriter
from worker.pipeline import ImagePipeline
from worker.ports import StatusPublisher
from worker.readahead import ReadAhead, ReadAheadSettings
from worker.reporter import Reporter, Reporting
from worker.runner import Runner
from worker.settings import Settings
from worker.settling import Settler
from worker.signals import STOP_SIGNALS, EarlyStop
from worker.slices import (
    finalising_settings,
    handling_settings,
    loop_settings,
    running_settings,
)
from worker.sweeper import Sweeper

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_kinesis.client import KinesisClient
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_sagemaker.client import SageMakerClient
    from types_aiobotocore_sagemaker_runtime.client import SageMakerRuntimeClient
    from types_aiobotocore_sns.client import SNSClient
    from types_aiobotocore_sqs.client import SQSClient

log = logging.getLogger(__name__)

S = TypeVar("S")


def _read_ahead(settings: Settings, s3: S3Client, make_client: ClientMaker) -> ReadAhead | None:
    """The read-ahead of ``s3://`` images, None when switched off."""
    if not settings.read_ahead:
        return None
    return ReadAhead(
        S3Objects(s3, make_client),
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


@dataclass(frozen=True)
class _Clients:
    sqs: SQSClient
    sns: SNSClient
    s3: S3Client
    kinesis: KinesisClient
    dynamodb: DynamoDBClient
    sagemaker: SageMakerRuntimeClient
    control: SageMakerClient
    http: aiohttp.ClientSession
    roles: RoleClients
    make_s3: ClientMaker  # an S3 client under other keys (an image's read role)


async def _open_clients(stack: AsyncExitStack, settings: Settings) -> _Clients:
    """Every client the worker uses, created once and closed with ``stack``."""
    session = get_session()
    args: dict[str, Any] = {"region_name": settings.aws_region}

    async def client(name: str) -> Any:
        create: Any = session.create_client  # one call for every service name
        return await stack.enter_async_context(create(name, **args))

    connector = aiohttp.TCPConnector(limit=settings.endpoint_concurrency)
    http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
    roles = RoleClients(session.create_client, await client("sts"), settings.aws_region)
    stack.push_async_callback(roles.close)
    return _Clients(
        sqs=await client("sqs"),
        sns=await client("sns"),
        s3=await client("s3"),
        kinesis=await client("kinesis"),
        dynamodb=await client("dynamodb"),
        sagemaker=await client("sagemaker-runtime"),
        control=await client("sagemaker"),
        http=http,
        roles=roles,
        make_s3=lambda **keys: session.create_client("s3", **args, **keys),
    )


def _publisher(clients: _Clients, topic_arn: str | None) -> StatusPublisher | None:
    return SnsStatusPublisher(clients.sns, topic_arn) if topic_arn else None


async def _queue(clients: _Clients, name: str, dlq: str) -> SqsQueue:
    return SqsQueue(
        clients.sqs, await _queue_url(clients.sqs, name), await _queue_url(clients.sqs, dlq)
    )


async def serve(settings: Settings, early_stop: EarlyStop | None = None) -> None:
    """Run the worker until SIGTERM or SIGINT (or at once if ``early_stop`` noted one before
    the loop listened); then finish or release the work in hand."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    if early_stop is not None and early_stop.requested:
        stop.set()
    async with AsyncExitStack() as stack:
        executor = stack.enter_context(
            ThreadPoolExecutor(settings.encode_threads, thread_name_prefix="tiles")
        )
        # Threads that only read pixels and write tiles: GDAL without its NITF specification.
        encoders = stack.enter_context(
            ThreadPoolExecutor(
                settings.encode_threads,
                thread_name_prefix="encode",
                initializer=start_without_nitf_spec,
            )
        )
        starting = asyncio.create_task(_start(stack, settings, (executor, encoders), stop))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():  # stopped while connecting: nothing was taken yet
            starting.cancel()
            await asyncio.wait({starting})
            log.info("stopped while starting: no work taken, exiting")
            return
        await starting.result().run()


async def _start(
    stack: AsyncExitStack,
    settings: Settings,
    executors: tuple[Executor, Executor],
    stop: asyncio.Event,
) -> Worker:
    """Open the clients (closed with ``stack``) and wire the worker."""
    clients = await _open_clients(stack, settings)
    return await _wire(settings, clients, executors, stop)


async def _wire(
    settings: Settings,
    clients: _Clients,
    executors: tuple[Executor, Executor],
    stop: asyncio.Event,
) -> Worker:
    """The worker and everything it works through (``executors``: the pool for planning,
    staging and finalising, and the one that reads and encodes tiles)."""
    executor, encoders = executors
    status = _publisher(clients, settings.status_topic_arn) or LogStatusPublisher()
    image_queue = await _queue(clients, settings.image_queue, settings.image_dlq)
    region_queue = await _queue(clients, settings.region_queue, settings.region_dlq)
    descriptions = EndpointDescriptions(clients.control)
    pipeline = ImagePipeline(
        settings,
        Endpoints(settings, clients.http, clients.sagemaker, clients.roles, descriptions),
        Sinks(
            (clients.s3, clients.kinesis),
            clients.roles,
            settings.s3_output_acl,
            settings.kinesis_request_records,
        ),
        executor,
        clients.roles,
        _read_ahead(settings, clients.s3, clients.make_s3),
        encoders,
    )
    metrics = MetricsWriter() if settings.metrics else None
    jobs = DynamoJobStore(
        clients.dynamodb,
        settings.job_table,
        settings.job_record_ttl_days,
        settings.endpoint_index,
        settings.unfinished_index,
    )
    staging = S3Staging(clients.s3, settings.staging_bucket, settings.staging_prefix, executor)
    region_status = _publisher(clients, settings.region_status_topic_arn)
    reporter = Reporter(Reporting(status, region_status, metrics))
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    finaliser = Finaliser(
        finalising_settings(settings, worker_id), pipeline, jobs, staging, reporter, image_queue
    )
    runner = Runner(
        running_settings(settings),
        pipeline,
        (jobs, staging, region_queue),
        reporter,
        finaliser,
    )
    capacity = CapacityGate(settings, descriptions, jobs) if settings.capacity_throttling else None
    settler = Settler(handling_settings(settings), status)
    starts = ImageStartHandler(settler, (runner, finaliser), image_queue)
    queues = Queues(
        image_queue,
        ImageHandler(settler, (runner, finaliser), status, capacity, metrics, region_queue),
        region_queue,
        RegionQueueHandler(RegionHandler(settler, runner), starts),
    )
    sweeper = Sweeper(jobs, finaliser, settings.request_limits)
    holder = Holder(
        DynamoHoldStore(clients.dynamodb, settings.job_table, settings.job_record_ttl_days),
        worker_id,
        settings.visibility_timeout_s,
        settings.max_receives,
    )
    return Worker(loop_settings(settings), queues, stop, metrics, sweeper.sweep, holder)


def main(early_stop: EarlyStop | None = None) -> None:
    """Entry point of ``python -m worker``; ``early_stop`` noted the stop signals so far."""
    early_stop = early_stop or EarlyStop()
    early_stop.install()
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
    asyncio.run(serve(settings, early_stop))
    # The closed loop gave the signals back to their default action (death by SIGTERM): a
    # second stop while the process exits must not change its exit status.
    early_stop.install()
