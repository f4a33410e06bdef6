"""The service's core (runner, finaliser, handlers) wired to in-memory fakes, for fast tests.

A :class:`FakeImages` pipeline plans a synthetic image for real (tile grid and regions, no I/O),
answers one detection per tile and finalises through the real duplicate removal and feature
output into :class:`MemorySink` outputs. Several :class:`Node` objects (workers) share one job
store, staging, status topic and queue, as workers share AWS; a test kills a worker at a chosen
step with :class:`Crash`, which no handler catches, as a process that dies runs nothing more.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import shapely

from postprocessing.table import Detection, DetectionTable
from tests.fakes import Crash, MemoryJobStore, MemoryStaging, RecordingPublisher, RecordingQueue
from tiling.image import ImageInfo
from worker.contract.parsing import RequestLimits, parse_image_request
from worker.contract.records import ImageOutcome
from worker.errors import SinkError
from worker.fanout import ImageStartHandler, RegionQueueHandler
from worker.finaliser import Finaliser, FinalisingSettings
from worker.handlers import ImageHandler, RegionHandler
from worker.images import ImageRef
from worker.output import FinalSource, finalise_image
from worker.pipeline import ImageJob, TileProgress
from worker.plan import plan_image
from worker.ports import OutputProgress, QueueMessage, Sink, SinkWriter
from worker.regions import Region, split_regions
from worker.reporter import Reporter, Reporting
from worker.runner import Runner, RunningSettings
from worker.settling import HandlingSettings, Settler, Work
from worker.staging import StagedRegion
from worker.sweeper import Sweeper

LEASE_S = 300.0
HANDLING = HandlingSettings(
    request_limits=RequestLimits(),
    image_schemes=frozenset({"s3"}),
    endpoint_hosts=frozenset({"127.0.0.1"}),
    max_receives=4,
    max_attempts=3,
    retry_delay_s=10,
    capacity_retry_s=30,
)


def request_body(job_id: str = "job-1", url: str = "s3://images/a.tif", **extra: object) -> str:
    """An image request for the fake pipeline (tile 256, overlap 32, one S3 output)."""
    return json.dumps(
        {
            "jobId": job_id,
            "imageUrls": [url],
            "outputs": [{"type": "S3", "bucket": "results", "prefix": "out"}],
            "imageProcessor": {
                "name": "http://127.0.0.1:8080/invocations",
                "type": "HTTP_ENDPOINT",
            },
            "imageProcessorTileSize": 256,
            "imageProcessorTileOverlap": 32,
            **extra,
        }
    )


@dataclass
class MemorySink:
    """An output that keeps what it is given; ``crash`` (``"open"``, ``"write"``, ``"close"``)
    kills the worker at that step; ``failing`` makes every close fail (a wrong bucket)."""

    name: str
    crash: str = ""
    failing: bool = False
    written: dict[str, list[str]] = field(default_factory=dict)  # output name -> features

    async def open(
        self, job_id: str, output_name: str, progress: OutputProgress | None = None
    ) -> SinkWriter:
        if self.crash == "open":
            raise Crash(f"{self.name}: open")
        return _MemoryWriter(self, output_name)


@dataclass
class _MemoryWriter:
    sink: MemorySink
    output_name: str
    features: list[str] = field(default_factory=list)

    async def write(self, features: list[str]) -> None:
        if self.sink.crash == "write":
            raise Crash(f"{self.sink.name}: write")
        self.features += features

    async def close(self) -> str:
        if self.sink.crash == "close":
            raise Crash(f"{self.sink.name}: close")
        if self.sink.failing:
            raise SinkError(f"{self.sink.name}: no such bucket")
        self.sink.written[self.output_name] = self.features
        return f"memory://{self.sink.name}/{self.output_name}"

    async def abort(self) -> None:
        self.features = []


class FakeImages:
    """Plans a synthetic image (``width`` x ``height``, no georeferencing) for real, answers one
    centre detection per tile, finalises into ``sinks``."""

    def __init__(
        self, width: int, height: int, sinks: list[MemorySink], region_px: int = 512
    ) -> None:
        self.width, self.height, self.sinks, self.region_px = width, height, sinks, region_px
        self.tiles_run = 0
        self.finalised = 0
        self.planned = 0
        self.plan_error: Exception | None = None  # raised by plan when set
        self.streams: list[Sink] = []  # outputs after the memory sinks (Kinesis on a fake)
        self._executor: Executor = ThreadPoolExecutor(1)

    async def plan(self, ref: ImageRef, region_px: int | None = None) -> ImageJob:
        self.planned += 1
        if self.plan_error is not None:
            raise self.plan_error
        info = ImageInfo(ref.url, self.width, self.height, 1, "uint8", "GTiff", None, None)
        plan = plan_image(info, ref.request)
        size = region_px or self.region_px
        overlap = ref.request.image_processor_tile_overlap
        regions = split_regions(plan.tiles, plan.layout, size, overlap)
        return ImageJob(ref, info, plan, regions, size)

    async def run_region(
        self, job: ImageJob, region: Region, progress: TileProgress
    ) -> StagedRegion:
        detections = []
        for tile in region.tiles:
            x, y = tile.col_off + tile.width / 2, tile.row_off + tile.height / 2
            geometry = shapely.box(x - 5, y - 5, x + 5, y + 5)
            detections.append(Detection(geometry, ({"iri": "thing", "score": 0.9},)))
            progress.done += 1
            await asyncio.sleep(0)  # let other tasks in, as real tile calls do
        self.tiles_run += len(region.tiles)
        return StagedRegion(DetectionTable.from_detections(detections), len(region.tiles))

    async def finalise(
        self,
        job: ImageJob,
        staged: list[StagedRegion],
        started: float,
        progress: OutputProgress | None = None,
    ) -> ImageOutcome:
        self.finalised += 1
        source = FinalSource(job.ref, job.info, job.plan.layout)
        sinks: list[Sink] = [*self.sinks, *self.streams]
        return await finalise_image(source, staged, started, sinks, self._executor, progress)


@dataclass
class Shared:
    """What the workers of a test share: the AWS side of the service."""

    images: FakeImages
    now: list[float] = field(default_factory=lambda: [1_000_000.0])
    jobs: MemoryJobStore = field(init=False)
    staging: MemoryStaging = field(default_factory=MemoryStaging)
    statuses: RecordingPublisher = field(default_factory=RecordingPublisher)
    queue: RecordingQueue = field(default_factory=RecordingQueue)

    def __post_init__(self) -> None:
        self.jobs = MemoryJobStore(clock=lambda: self.now[0])

    def advance(self, seconds: float) -> None:
        """Move the lease clock on (leases of dead workers expire)."""
        self.now[0] += seconds

    def terminal_statuses(self, job_id: str) -> list[str]:
        """The terminal statuses published for ``job_id``, in order."""
        return [
            e.status.value for e in self.statuses.events if e.job_id == job_id and e.status.terminal
        ]


class Node:
    """One worker: its runner, finaliser and handlers over the shared fakes."""

    def __init__(self, shared: Shared, worker_id: str) -> None:
        self.shared = shared
        reporter = Reporter(Reporting(shared.statuses))
        self.finaliser = Finaliser(
            FinalisingSettings(LEASE_S, 3600.0, worker_id),
            shared.images,
            shared.jobs,
            shared.staging,
            reporter,
            shared.queue,
        )
        self.runner = Runner(
            RunningSettings(3600.0, 16, 60.0),
            shared.images,
            (shared.jobs, shared.staging, shared.queue),
            reporter,
            self.finaliser,
        )
        self.sweeper = Sweeper(
            shared.jobs, self.finaliser, RequestLimits(), clock=lambda: shared.now[0]
        )
        settler = Settler(HANDLING, shared.statuses)
        images = (self.runner, self.finaliser)
        self.images = ImageHandler(settler, images, shared.statuses, fan_out=shared.queue)
        self.regions = RegionQueueHandler(
            RegionHandler(settler, self.runner),
            ImageStartHandler(settler, images, shared.queue),
        )

    async def handle(self, message: QueueMessage, is_region: bool = False) -> None:
        """Handle one message as the loop would."""
        handler = self.regions if is_region else self.images
        await handler.handle(Work(self.shared.queue, message, is_region))


def message(body: str, message_id: str, receive_count: int = 1) -> QueueMessage:
    """A received message."""
    return QueueMessage(message_id, f"receipt-{message_id}-{receive_count}", body, receive_count)


def ref_of(body: str) -> ImageRef:
    """The first image of a request body."""
    return ImageRef(parse_image_request(body), 0)


def region_bodies(shared: Shared) -> list[str]:
    """The region messages sent so far, in order."""
    return [body for body, _, _ in shared.queue.sent if '"regionId"' in body]


def image_start_bodies(shared: Shared) -> list[str]:
    """The image start messages sent so far, in order."""
    return [body for body, _, _ in shared.queue.sent if '"kind":"imageStart"' in body]


def detection_count(shared: Shared, output_name: str, sink: int = 0) -> int:
    """How many features the output ``output_name`` of sink ``sink`` holds."""
    return len(shared.images.sinks[sink].written.get(output_name, []))
