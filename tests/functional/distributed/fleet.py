"""The worker processes of the distributed tests and what they read of a job.

A fleet runs on a stack of its own (tests/functional/distributed/conftest.py), so that exactly
the workers a test starts are running.
"""

import itertools
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from infra.local_stack import LocalStack
from tests.functional.helpers import TERMINAL, Stack

VISIBILITY_S = 6
WORKER_NUMBERS = itertools.count(1)
FLEET_ENV = {
    "MODELRUNNER_REGION_SIZE_PX": "512",
    "MODELRUNNER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
    "MODELRUNNER_MAX_ATTEMPTS": "3",
    "MODELRUNNER_RETRY_DELAY_S": "1",
    "MODELRUNNER_GRACE_PERIOD_S": "1",
    "MODELRUNNER_ENDPOINT_CONCURRENCY": "4",
    "MODELRUNNER_LOG_FORMAT": "json",
}
FLOOD = "model_selection=flood,flood_volume=12,flood_seed=tile"


class Fleet:
    """Worker processes started and stopped by the tests."""

    def __init__(self, local: LocalStack) -> None:
        self.local = local
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, **overrides: str) -> str:
        """Start a worker and wait until it polls."""
        name = self.launch(**overrides)
        self.local.wait_for_log(name, "worker polling")
        return name

    def launch(self, **overrides: str) -> str:
        """Start a worker without waiting for it."""
        name = f"fleet-{next(WORKER_NUMBERS)}"  # a fresh log file for every worker
        health = {"MODELRUNNER_HEALTH_FILE": str(self.health_file(name))}
        self.running[name] = self.local.start_worker(name, **{**FLEET_ENV, **health, **overrides})
        return name

    def health_file(self, name: str) -> Path:
        return self.local.log_dir / f"{name}.health"

    def log(self, name: str) -> str:
        return (self.local.log_dir / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        """SIGTERM every worker at once; each exits 0."""
        stopping = [self.running.pop(name) for name in list(self.running)]
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(30) for process in stopping] == [0] * len(stopping)


def flood_request(stack: Stack, image_url: str) -> dict[str, Any]:
    return stack.request(
        image_url,
        imageProcessorTileSize=256,
        imageProcessorTileOverlap=32,
        imageProcessorTileFormat="GTIFF",
        imageProcessorParameters={"CustomAttributes": FLOOD},
    )


def summary(document: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What must not depend on who did the work: pixel boxes, classes and scores."""
    return sorted(
        (
            tuple(round(v, 6) for v in f["properties"]["imageBBox"]),
            json.dumps(f["properties"]["featureClasses"], sort_keys=True),
        )
        for f in document["features"]
    )


def run_job(stack: Stack, request: dict[str, Any], timeout_s: float = 180) -> list[Any]:
    stack.submit(json.dumps(request))
    return stack.statuses.wait_terminal(request["jobId"], timeout_s=timeout_s)


def settle(stack: Stack, job_id: str, quiet_s: float = VISIBILITY_S + 4) -> list[Any]:
    """Statuses of ``job_id`` after nothing can be redelivered any more."""
    deadline = time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        stack.statuses._drain()
    return stack.statuses.by_job[job_id]


def terminal(statuses: list[Any]) -> list[str]:
    return [s.attributes["status"] for s in statuses if s.attributes["status"] in TERMINAL]
