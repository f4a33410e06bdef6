"""Workers killed or stopped in the middle of a job: nothing is lost or duplicated.

kill -9 at every stage of a job and SIGTERM with a region in hand: every job ends, once.
(Messages whose workers keep dying: ``test_poison.py``.)
"""

import json
import re
import signal
import threading
import time
from typing import Any

import pytest

from tests.functional.distributed.fleet import Fleet, flood_request, settle, summary, terminal
from tests.functional.helpers import Stack

pytestmark = pytest.mark.functional


# Where to kill (a log line of the worker) and how long after it.
CRASH_POINTS = {
    "planning": (r"tiles in 12 region\(s\)", 0.0),
    "tiling": (r"region \d+/12: \d+ tiles over", 0.2),
    "staged": (r"region \d+ staged", 0.0),
    "finalising": (r"finalising 12 regions", 0.0),
}


def kill_on_log(fleet: Fleet, job_id: str, pattern: str, delay_s: float) -> threading.Thread:
    """Kill -9 the first running worker that logs ``pattern`` for ``job_id``."""
    expression = re.compile(rf"job {re.escape(job_id)}.*{pattern}")

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for name in list(fleet.running):
                if expression.search(fleet.log(name)):
                    time.sleep(delay_s)
                    fleet.kill(name)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_kill_9_at_any_point_loses_and_duplicates_nothing(
    fleet_stack: Stack,
    fleet: Fleet,
    image_url: str,
    clean_result: list[tuple[Any, ...]],
    point: str,
) -> None:
    for _ in range(2):
        fleet.start()
    request = flood_request(fleet_stack, image_url)
    pattern, delay_s = CRASH_POINTS[point]
    watcher = kill_on_log(fleet, request["jobId"], pattern, delay_s)
    fleet_stack.submit(json.dumps(request))
    watcher.join(120)
    assert len(fleet.running) == 1, f"no worker was killed at {point}"
    fleet.start()  # the platform replaces the lost worker

    fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=180)
    assert terminal(settle(fleet_stack, request["jobId"])) == ["SUCCESS"]
    assert summary(fleet_stack.result(request["jobId"])) == clean_result


def test_sigterm_releases_the_region_in_hand(
    fleet_stack: Stack, fleet: Fleet, image_url: str
) -> None:
    first = fleet.start(MODELRUNNER_MAX_IN_FLIGHT="1", MODELRUNNER_VISIBILITY_TIMEOUT_S="120")
    request = flood_request(fleet_stack, image_url)
    request["imageProcessorParameters"] = {"CustomAttributes": "sleep_ms=300"}
    fleet_stack.submit(json.dumps(request))
    fleet.local.wait_for_log(first, f"job {request['jobId']} image")
    process = fleet.running.pop(first)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert time.monotonic() - started < 15, "the grace period bounds the stop"
    assert "released message" in fleet.log(first) or "stopping" in fleet.log(first)
    # The released work is taken at once by another worker, not after the 120 s visibility.
    fleet.start(MODELRUNNER_VISIBILITY_TIMEOUT_S="120")
    statuses = fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=100)
    assert terminal(statuses) == ["SUCCESS"]
