"""A stopped worker exits 0 after releasing its work, whenever the stop comes."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fakes import RecordingQueue
from tests.service import message
from worker.errors import PermanentError
from worker.loop import LoopSettings, Queues, Worker
from worker.ports import QueueMessage
from worker.settling import Work


class ExpiredReceipts(RecordingQueue):
    """Gives one message, then stops the worker; its receipt has expired when released."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__()
        self._stop = stop

    async def receive(
        self, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[QueueMessage]:
        self._stop.set()  # SIGTERM while the receive was in flight
        return [message("{}", "m-1")]

    async def set_visibility(self, message: QueueMessage, timeout_s: int) -> None:
        raise PermanentError("ReceiptHandleIsInvalid: the receipt handle has expired")


class Idle:
    async def handle(self, work: Work) -> None:
        raise AssertionError("no work is taken once stopped")


def test_a_message_that_cannot_be_released_does_not_stop_the_stopping() -> None:
    async def run() -> None:
        stop = asyncio.Event()
        queue = ExpiredReceipts(stop)
        settings = LoopSettings(2, 0, 0, 30, 0.1)
        await Worker(settings, Queues(queue, Idle(), queue, Idle()), stop).run()

    asyncio.run(run())  # returns: the exit status stays 0


@pytest.mark.parametrize("after_s", [0.05, 0.3, 0.8])
def test_sigterm_while_the_worker_starts_exits_0(after_s: float) -> None:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: nothing may be needed
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "MODELRUNNER_LOG_FORMAT": "text",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "worker"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(after_s)  # the service is still importing (about a second)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()[-2000:]
