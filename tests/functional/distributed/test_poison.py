"""Messages whose workers die: one that kills every worker working on it is failed and
dead-lettered; in a kill storm where no message kills its workers, every message is run to
the end (worker/poison.py)."""

import json
import random
import re
import threading
import time
from typing import Any

import pytest

from tests.functional.distributed.fleet import (
    FLOOD,
    Fleet,
    flood_request,
    settle,
    summary,
    terminal,
)
from tests.functional.helpers import Stack

pytestmark = pytest.mark.functional


def deaths_while_holding(stack: Stack) -> dict[str, int]:
    """For each message worked on, how many of its holds were never ended, once every live
    worker has settled what it held: the deaths of workers working on it (read from the job
    table, as the workers judge them)."""
    table = stack.local.resources.job_table
    found: dict[str, int] = {}
    for page in stack.dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            key = item["image_id"]["S"]
            if key.startswith("hold#"):
                holds = item["holds"]["L"]
                found[key] = sum(1 for h in holds if "e" not in h["M"])
    return found


def test_a_message_that_kills_every_worker_on_it_is_failed_and_dead_lettered(
    fleet_stack: Stack, fleet: Fleet, image_url: str
) -> None:
    request = flood_request(fleet_stack, image_url)
    body = json.dumps(request)
    working = re.compile(rf"job {re.escape(request['jobId'])}: \d+ image\(s\)")
    limits = {"MODELRUNNER_MAX_RECEIVES": "2"}
    fleet.start(**limits)
    fleet_stack.submit(body)
    # As if the request crashed whoever starts on it: two workers die working on it.
    for _ in range(2):
        deadline = time.monotonic() + 60
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = next((n for n in fleet.running if working.search(fleet.log(n))), None)
            time.sleep(0.01)
        assert victim is not None, "no worker started on the request"
        fleet.kill(victim)
        fleet.start(**limits)
    statuses = fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=60)
    assert terminal(statuses) == ["FAILED"]
    assert "2 workers died working on this message" in statuses[-1].message
    dead = [r for b, r in fleet_stack.dead_letters(request["jobId"]) if b == body]
    assert len(dead) == 1
    assert "MODELRUNNER_MAX_RECEIVES=2" in dead[0]
    (survivor,) = fleet.running
    assert "worker polling" in fleet.log(survivor)  # and it goes on


def test_a_kill_storm_kills_no_healthy_message(
    fleet_stack: Stack, fleet: Fleet, image_url: str, clean_result: list[tuple[Any, ...]]
) -> None:
    # Condemned after 2 unsettled receives by a receive count; judged by deaths here.
    limits = {"MODELRUNNER_MAX_RECEIVES": "2"}
    for _ in range(3):
        fleet.start(**limits)
    request = flood_request(fleet_stack, image_url)
    request["imageProcessorParameters"] = {"CustomAttributes": f"sleep_ms=1500,{FLOOD}"}
    storm_over = threading.Event()
    kills: list[str] = []
    rng = random.Random(25)

    def storm() -> None:  # a kill -9 every 0.5 to 1.5 s, each worker replaced at once
        ends = time.monotonic() + 20
        while time.monotonic() < ends and not storm_over.is_set():
            time.sleep(rng.uniform(0.5, 1.5))
            victim = rng.choice(sorted(fleet.running))
            fleet.kill(victim)
            kills.append(victim)
            fleet.launch(**limits)

    killer = threading.Thread(target=storm, daemon=True)
    fleet_stack.submit(json.dumps(request))
    killer.start()
    try:
        fleet_stack.statuses.wait_terminal(request["jobId"], timeout_s=240)
    finally:
        storm_over.set()
        killer.join(30)
    assert terminal(settle(fleet_stack, request["jobId"])) == ["SUCCESS"]
    assert summary(fleet_stack.result(request["jobId"])) == clean_result
    assert not [body for body, _ in fleet_stack.dead_letters() if request["jobId"] in body]
    deaths = deaths_while_holding(fleet_stack)
    seen = f"{len(kills)} kills; deaths while holding, per message: {sorted(deaths.values())}"
    assert len(kills) >= 10, seen
    assert max(deaths.values()) >= 2, seen  # a receive count would have condemned that one
