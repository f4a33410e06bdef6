"""In-memory fakes of the worker's ports, for tests of the rules that use them.

``MemoryJobStore`` follows the rules of :class:`worker.adapters.dynamodb.DynamoJobStore` (tested
against the real emulator in ``tests/worker/test_jobstore.py``); the others record calls.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

from worker.contract.records import ImageOutcome, ImageRecord, RunPlan
from worker.contract.status import StatusEvent
from worker.poison import FleetEntry, Hold
from worker.ports import QueueMessage
from worker.staging import StagedRegion


class Crash(BaseException):
    """The worker process dies here: nothing after this line runs (no handler catches it)."""


class MemoryHoldStore:
    """Holds and the fleet registry in memory, as
    :class:`worker.adapters.holds.DynamoHoldStore` keeps them (tested against the emulator in
    ``tests/worker/test_holds_store.py``)."""

    def __init__(self) -> None:
        self.holds: dict[str, list[Hold]] = {}
        self.workers: dict[str, FleetEntry] = {}

    async def begin(self, key: str, worker: str, now: float) -> tuple[list[Hold], int]:
        holds = self.holds.setdefault(key, [])
        holds.append(Hold(worker, round(now, 3)))
        return holds[:-1], len(holds) - 1

    async def end(self, key: str, index: int, now: float, error: bool) -> None:
        holds = self.holds[key]
        holds[index] = dataclasses.replace(holds[index], ended=round(now, 3), error=error)

    async def fleet(self) -> dict[str, FleetEntry]:
        return dict(self.workers)

    async def beat(self, worker: str, entry: FleetEntry) -> None:
        self.workers[worker] = entry

    async def forget(self, workers: list[str]) -> None:
        for worker in workers:
            del self.workers[worker]


class MemoryJobStore:
    """Image records in a dict, with the conditional rules of the DynamoDB store; leases expire
    by ``clock`` (a test moves it on to let another worker take over)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.records: dict[str, ImageRecord] = {}
        self.leases: dict[str, tuple[str, float]] = {}
        self.clock = clock
        self.finished = 0  # outcomes recorded
        # "finish", "mark_published" or "advance_output": die after it, once
        self.crash_after: str | None = None
        self.unfinished: set[str] = set()  # the keys in the sparse unfinished-index
        self.names: dict[str, tuple[str, str]] = {}

    def _maybe_crash(self, step: str) -> None:
        if self.crash_after == step:
            self.crash_after = None
            raise Crash(step)

    def put(self, job_id: str, image_url: str, record: ImageRecord) -> None:
        """Set a record as a test needs it."""
        self.records[f"{job_id}:{image_url}"] = record

    def _fresh(self, key: str, plan: RunPlan, run: int) -> ImageRecord:
        now = time.time()
        self.unfinished.add(key)
        return ImageRecord(
            region_count=plan.region_count,
            tile_count=plan.tile_count,
            start_time=now,
            deadline=now + plan.deadline_s,
            run=run,
            submission_id=plan.submission_id,
            request_body=plan.request_body,
            image_index=plan.image_index,
        )

    async def open_image(self, job_id: str, image_url: str, plan: RunPlan) -> ImageRecord:
        key = f"{job_id}:{image_url}"
        self.names[key] = (job_id, image_url)
        existing = self.records.get(key)
        if existing is None:
            self.records[key] = self._fresh(key, plan, 1)
            return dataclasses.replace(self.records[key], created=True)
        if (
            existing.final_status is None
            or not plan.submission_id
            or existing.redelivered(plan.submission_id)
        ):
            return existing
        self.records[key] = self._fresh(key, plan, existing.run + 1)
        self.leases.pop(key, None)
        return dataclasses.replace(self.records[key], created=True)

    async def get(self, job_id: str, image_url: str) -> ImageRecord | None:
        return self.records.get(f"{job_id}:{image_url}")

    async def region_done(
        self, job_id: str, image_url: str, region_id: int, run: int
    ) -> ImageRecord | None:
        key = f"{job_id}:{image_url}"
        record = self.records.get(key)
        if record is None or record.run != run:
            return None
        record = dataclasses.replace(record, regions_done=record.regions_done | {region_id})
        self.records[key] = record
        return record

    async def claim(self, job_id: str, image_url: str, owner: str, lease_s: float) -> bool:
        key = f"{job_id}:{image_url}"
        now = self.clock()
        holder, until = self.leases.get(key, (owner, now))
        if holder != owner and until > now:
            return False
        self.leases[key] = (owner, now + lease_s)
        return True

    async def finish(self, job_id: str, image_url: str, owner: str, outcome: ImageOutcome) -> bool:
        key = f"{job_id}:{image_url}"
        record = self.records[key]
        if record.final_status is not None or self.leases.get(key, ("", 0.0))[0] != owner:
            return False
        self.finished += 1
        self.records[key] = record.with_outcome(outcome)
        self._maybe_crash("finish")
        return True

    async def mark_published(self, job_id: str, image_url: str, run: int) -> None:
        key = f"{job_id}:{image_url}"
        if self.records[key].run == run:
            self.records[key] = dataclasses.replace(self.records[key], published=True)
        self._maybe_crash("mark_published")

    async def mark_cleaned(self, job_id: str, image_url: str, run: int) -> None:
        key = f"{job_id}:{image_url}"
        if self.records[key].run == run:
            self.unfinished.discard(key)

    async def advance_output(
        self, job_id: str, image_url: str, owner: str, output: str, count: int
    ) -> bool:
        key = f"{job_id}:{image_url}"
        record = self.records[key]
        if record.final_status is not None or self.leases.get(key, ("", 0.0))[0] != owner:
            return False
        progress = {**record.output_progress, output: count}
        self.records[key] = dataclasses.replace(record, output_progress=progress)
        self._maybe_crash("advance_output")
        return True

    async def stalled(self, now: float) -> list[tuple[str, str]]:
        return [
            self.names[key]
            for key in sorted(self.unfinished)
            if key in self.leases and self.leases[key][1] < now
        ]


class FakeKinesis:
    """The two Kinesis calls a KinesisSink makes, keeping every record put (duplicates too);
    ``crash_after_puts`` kills the worker just after that many more PutRecords calls reached
    the stream, before it hears back."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.calls = 0
        self.crash_after_puts: int | None = None

    async def list_shards(self, **_: object) -> dict[str, object]:
        return {"Shards": [{"HashKeyRange": {"StartingHashKey": "0"}}]}

    async def put_records(self, Records: list[dict[str, object]], **_: object) -> object:
        self.records += [record["Data"] for record in Records]  # type: ignore[misc]
        self.calls += 1
        if self.crash_after_puts is not None:
            self.crash_after_puts -= 1
            if self.crash_after_puts == 0:
                self.crash_after_puts = None
                raise Crash("put_records")
        return {"FailedRecordCount": 0, "Records": [{} for _ in Records]}

    def feature_ids(self) -> list[str]:
        """The ids of every feature on the stream, in order, duplicates included."""
        return [feature["id"] for data in self.records for feature in json.loads(data)["features"]]


class MemoryStaging:
    """Staged regions in a dict keyed by (job, image, run, region)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, int, int, int], StagedRegion] = {}
        self.crash_after_put = False  # die once, just after a region is staged

    async def put(
        self, job_id: str, image_index: int, region_id: int, staged: StagedRegion, run: int = 1
    ) -> None:
        self.objects[(job_id, image_index, run, region_id)] = staged
        if self.crash_after_put:
            self.crash_after_put = False
            raise Crash("staged")

    async def get(
        self, job_id: str, image_index: int, region_id: int, run: int = 1
    ) -> StagedRegion:
        return self.objects[(job_id, image_index, run, region_id)]

    async def exists(self, job_id: str, image_index: int, region_id: int, run: int = 1) -> bool:
        return (job_id, image_index, run, region_id) in self.objects

    async def delete(
        self, job_id: str, image_index: int, region_ids: list[int], run: int = 1
    ) -> None:
        for region_id in region_ids:
            self.objects.pop((job_id, image_index, run, region_id), None)


class RecordingPublisher:
    """Keeps the status events published."""

    def __init__(self) -> None:
        self.events: list[StatusEvent] = []

    async def publish(self, event: StatusEvent) -> None:
        self.events.append(event)


class RecordingQueue:
    """A queue that records how its messages are settled and what is sent to it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, str]] = []
        self.deleted: list[str] = []
        self.dead: list[str] = []
        self.visibility: list[int] = []

    async def receive(
        self, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[QueueMessage]:
        return []

    async def delete(self, message: QueueMessage) -> None:
        self.deleted.append(message.message_id)

    async def set_visibility(self, message: QueueMessage, timeout_s: int) -> None:
        self.visibility.append(timeout_s)

    async def send(self, body: str, delay_s: int = 0, submission_id: str = "") -> None:
        self.sent.append((body, delay_s, submission_id))

    async def dead_letter(self, message: QueueMessage, reason: str) -> None:
        self.dead.append(reason)

    async def dead_letter_body(self, body: str, reason: str, source_id: str = "") -> None:
        self.dead.append(reason)
