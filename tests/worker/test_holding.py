"""The worker loop records its holds and beats, and the handlers judge a message by them:
deaths while working on it against the fleet's death rate, errors apart (worker/holding.py)."""

import asyncio
import time

from tests.fakes import MemoryHoldStore, RecordingPublisher, RecordingQueue
from tests.service import HANDLING, message, request_body
from worker.errors import RetryableError
from worker.handlers import ImageHandler
from worker.holding import Holder
from worker.images import ImageRef
from worker.loop import LoopSettings, Queues, Worker
from worker.poison import FleetEntry, Hold
from worker.ports import QueueMessage
from worker.settling import Settler, Work

VISIBILITY_S = 6
BEAT_S = VISIBILITY_S / 4
KEY = "image#m-1"


class Service:
    """Starts images by raising ``error`` (or not); records failures."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.started = 0
        self.failed: list[str] = []

    async def start_image(self, ref: ImageRef, submission_id: str = "") -> None:
        self.started += 1
        if self.error is not None:
            raise self.error

    async def fail(self, ref: ImageRef, reason: str, submission_id: str = "") -> None:
        self.failed.append(reason)


def handle(
    store: MemoryHoldStore, service: Service, receive_count: int
) -> tuple[RecordingQueue, Worker]:
    queue, statuses = RecordingQueue(), RecordingPublisher()
    handler = ImageHandler(Settler(HANDLING, statuses), (service, service), statuses)
    holder = Holder(store, "me", VISIBILITY_S, HANDLING.max_receives)
    settings = LoopSettings(1, 0, 0, VISIBILITY_S, 0.1)
    worker = Worker(
        settings, Queues(queue, handler, queue, handler), asyncio.Event(), holder=holder
    )
    work = Work(queue, message(request_body(), "m-1", receive_count), is_region=False)
    asyncio.run(worker.handle(work))
    return queue, worker


def fleet_with_dead_holders(store: MemoryHoldStore, deaths: int) -> None:
    """A quiet fleet of three, and ``deaths`` workers that died holding the message."""
    now = time.time()
    for i in range(3):
        store.workers[f"up-{i}"] = FleetEntry(now - 300, now, BEAT_S)
    holds = store.holds.setdefault(KEY, [])
    for i in range(deaths):
        at = now - 10 - 8 * i
        store.workers[f"holder-{i}"] = FleetEntry(at - 60, at, BEAT_S)
        holds.append(Hold(f"holder-{i}", at - 0.5))


def test_a_message_whose_workers_die_on_it_in_a_quiet_fleet_is_given_up() -> None:
    store, service = MemoryHoldStore(), Service()
    fleet_with_dead_holders(store, 4)
    queue, _ = handle(store, service, receive_count=5)
    assert service.started == 0
    (reason,) = queue.dead
    assert reason.startswith("4 workers died working on this message")
    assert service.failed == [reason]
    assert store.holds[KEY][-1].worker == "me"
    assert store.holds[KEY][-1].ended is not None


def test_receives_that_never_reached_work_do_not_condemn() -> None:
    # Received 9 times, but every earlier worker died before starting on it (no hold).
    store, service = MemoryHoldStore(), Service()
    fleet_with_dead_holders(store, 0)
    queue, _ = handle(store, service, receive_count=9)
    assert service.started == 1
    assert (queue.dead, queue.deleted) == ([], ["m-1"])
    (hold,) = store.holds[KEY]
    assert hold.ended is not None
    assert not hold.error


def test_retries_count_attempts_that_failed_not_receives() -> None:
    store, service = MemoryHoldStore(), Service(RetryableError("endpoint busy"))
    fleet_with_dead_holders(store, 2)  # two deaths: not attempts that failed
    queue, _ = handle(store, service, receive_count=3)
    assert (queue.dead, queue.visibility) == ([], [10])  # attempt 1 of 3: retried in 10 s
    assert store.holds[KEY][-1].error
    queue, _ = handle(store, service, receive_count=4)
    assert queue.visibility == [20]  # attempt 2
    queue, _ = handle(store, service, receive_count=5)
    assert queue.dead == ["gave up after 3 attempts: endpoint busy"]


def test_a_bug_ends_the_hold_as_an_error() -> None:
    store, service = MemoryHoldStore(), Service(ZeroDivisionError("division by zero"))
    queue, _ = handle(store, service, receive_count=1)
    assert (queue.dead, queue.deleted) == ([], [])  # left for redelivery
    (hold,) = store.holds[KEY]
    assert hold.error


def test_without_the_store_the_receive_count_decides() -> None:
    class Down(MemoryHoldStore):
        async def begin(self, key: str, worker: str, now: float) -> tuple[list[Hold], int]:
            raise RetryableError("DynamoDB unavailable")

    service = Service()
    queue, _ = handle(Down(), service, receive_count=5)
    assert service.started == 0
    assert "received 5 times without finishing" in queue.dead[0]


class Empty(RecordingQueue):
    """A queue with nothing to receive (each poll waits a little)."""

    async def receive(
        self, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[QueueMessage]:
        await asyncio.sleep(0.01)
        return []


def test_the_worker_beats_and_says_it_exited() -> None:
    store = MemoryHoldStore()

    async def run() -> None:
        stop = asyncio.Event()
        queue = Empty()
        holder = Holder(store, "me", VISIBILITY_S, 4)
        settings = LoopSettings(1, 0, 0, VISIBILITY_S, 0.1)
        statuses = RecordingPublisher()
        idle = ImageHandler(Settler(HANDLING, statuses), (Service(), Service()), statuses)
        worker = Worker(settings, Queues(queue, idle, queue, idle), stop, holder=holder)
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.2)
        assert not store.workers["me"].exited
        stop.set()
        await running

    asyncio.run(run())
    entry = store.workers["me"]
    assert entry.exited
    assert entry.interval_s == BEAT_S
