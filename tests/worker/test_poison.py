"""The poison rule (worker/poison.py): deaths while working on a message, judged against the
fleet's death rate; errors counted apart."""

import math

import pytest

from worker.poison import (
    HARD_LIMIT_FACTOR,
    WINDOW_S,
    FleetEntry,
    Hold,
    fleet_death_rate,
    judge,
    poisson_tail,
)

NOW = 1_000_000.0
BEAT_S = 1.5


def alive(started: float = NOW - WINDOW_S) -> FleetEntry:
    return FleetEntry(started, NOW - 0.5, BEAT_S)


def died(at: float, started: float | None = None) -> FleetEntry:
    return FleetEntry(at - 30 if started is None else started, at, BEAT_S)


def quiet_fleet(size: int = 4) -> dict[str, FleetEntry]:
    return {f"up-{i}": alive() for i in range(size)}


def storm_fleet(deaths: int, size: int = 4) -> dict[str, FleetEntry]:
    """``size`` workers alive and ``deaths`` replaced workers, each having lived 3 s, in the
    last ``deaths x 3 / size`` seconds: a kill every 0.75 s across a fleet of 4."""
    fleet = {f"up-{i}": alive(started=NOW - 3) for i in range(size)}
    for i in range(deaths):
        at = NOW - 10 - i * 3 / size
        fleet[f"gone-{i}"] = FleetEntry(at - 3, at, BEAT_S)
    return fleet


def dead_holds(count: int, held_s: float, fleet: dict[str, FleetEntry]) -> list[Hold]:
    """``count`` holds whose workers died ``held_s`` after starting on the message."""
    holds = []
    for i in range(count):
        at = NOW - 5 - i * 20
        fleet[f"holder-{i}"] = FleetEntry(at - 60, at, BEAT_S)
        holds.append(Hold(f"holder-{i}", at - held_s))
    return holds


def test_poisson_tail_matches_the_sum() -> None:
    for mean in (0.1, 1.0, 4.2):
        for count in range(0, 8):
            direct = 1 - sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(count))
            assert poisson_tail(count, mean) == pytest.approx(direct, abs=1e-12)
    assert poisson_tail(3, 0.0) == 0.0
    assert poisson_tail(0, 0.0) == 1.0


def test_in_a_quiet_fleet_four_deaths_condemn_the_message() -> None:
    fleet = quiet_fleet()
    holds = dead_holds(4, 1.0, fleet)
    verdict = judge(holds, fleet, NOW, receive_count=5, max_receives=4)
    assert verdict.deaths == 4
    assert verdict.expected_deaths == 0.0  # its own holders' deaths are left out of the rate
    assert verdict.reason is not None
    assert "4 workers died working on this message" in verdict.reason
    assert "MODELRUNNER_MAX_RECEIVES=4" in verdict.reason


def test_three_deaths_are_not_enough() -> None:
    fleet = quiet_fleet()
    verdict = judge(dead_holds(3, 1.0, fleet), fleet, NOW, 4, 4)
    assert (verdict.deaths, verdict.reason) == (3, None)


def test_in_a_kill_storm_a_message_held_through_it_is_not_condemned() -> None:
    fleet = storm_fleet(deaths=120)  # 120 workers died in the last 100 s
    holds = dead_holds(6, 8.0, fleet)  # each held it for 8 s before dying
    verdict = judge(holds, fleet, NOW, receive_count=9, max_receives=4)
    assert verdict.deaths == 6
    assert verdict.expected_deaths > 3
    assert verdict.reason is None


def test_in_a_kill_storm_a_message_that_kills_at_once_is_still_condemned() -> None:
    fleet = storm_fleet(deaths=120)
    # Each holder died within a beat of starting on it: far sooner than the storm explains.
    holds = dead_holds(12, 0.0, fleet)
    verdict = judge(holds, fleet, NOW, receive_count=13, max_receives=4)
    assert verdict.reason is not None
    assert "12 workers died" in verdict.reason


def test_a_holder_still_beating_or_exited_did_not_die() -> None:
    fleet = quiet_fleet()
    fleet["slow"] = alive()
    fleet["stopped"] = FleetEntry(NOW - 100, NOW - 50, BEAT_S, exited=True)
    holds = [Hold("slow", NOW - 30), Hold("stopped", NOW - 60)] * 3
    verdict = judge(holds, fleet, NOW, receive_count=7, max_receives=4)
    assert (verdict.deaths, verdict.reason) == (0, None)


def test_errors_are_counted_apart_from_deaths() -> None:
    fleet = quiet_fleet()
    holds = [Hold("up-0", NOW - 50 + i, ended=NOW - 49 + i, error=True) for i in range(3)]
    holds += dead_holds(1, 1.0, fleet)
    verdict = judge(holds, fleet, NOW, receive_count=5, max_receives=4)
    assert (verdict.deaths, verdict.errors, verdict.reason) == (1, 3, None)
    holds.append(Hold("up-1", NOW - 2, ended=NOW - 1, error=True))
    verdict = judge(holds, fleet, NOW, receive_count=6, max_receives=4)
    assert verdict.reason == (
        "message failed with an error 4 times (limit MODELRUNNER_MAX_RECEIVES=4)"
    )


def test_receives_without_a_hold_count_only_toward_the_hard_limit() -> None:
    fleet = quiet_fleet()
    limit = HARD_LIMIT_FACTOR * 4
    assert judge([], fleet, NOW, receive_count=limit, max_receives=4).reason is None
    reason = judge([], fleet, NOW, receive_count=limit + 1, max_receives=4).reason
    assert reason is not None
    assert f"received {limit + 1} times" in reason


def test_the_fleet_death_rate_counts_deaths_per_worker_second_since_a_time() -> None:
    fleet = {
        "a": alive(started=NOW - 100),  # 100 s
        "b": died(NOW - 50, started=NOW - 150),  # 100 s, dead
        "c": died(NOW - WINDOW_S - 10),  # before
        "d": FleetEntry(NOW - 200, NOW - 100, BEAT_S, exited=True),  # 100 s, stopped cleanly
    }
    since = NOW - 200
    assert fleet_death_rate(fleet, NOW, since) == pytest.approx(1 / 300)
    assert fleet_death_rate(fleet, NOW, since, leave_out=frozenset({"b"})) == 0.0
    assert fleet_death_rate(fleet, NOW, NOW - 40) == 0.0  # b died before
    assert fleet_death_rate({}, NOW, since) == 0.0


def test_a_storm_is_judged_by_the_rate_since_the_message_began_not_a_quiet_hour_before() -> None:
    # Twenty workers idled for the last ten minutes and stopped; then a storm began 8 s ago.
    fleet = {f"idle-{i}": FleetEntry(NOW - 590, NOW - 20, BEAT_S, exited=True) for i in range(20)}
    for i in range(3):
        fleet[f"up-{i}"] = alive(started=NOW - 8)
    for i in range(6):
        fleet[f"gone-{i}"] = FleetEntry(NOW - 8 + 0.6 * i, NOW - 7.5 + 0.6 * i, BEAT_S)
    holds = []
    for i in range(2):  # the message's two holders, each killed a second after starting
        fleet[f"holder-{i}"] = FleetEntry(NOW - 8, NOW - 7 + 2 * i, BEAT_S)
        holds.append(Hold(f"holder-{i}", NOW - 8 + 2 * i))
    verdict = judge(holds, fleet, NOW, receive_count=3, max_receives=2)
    assert verdict.deaths == 2
    assert verdict.reason is None
    # Without the storm the same two deaths condemn it.
    quiet = {k: v for k, v in fleet.items() if not k.startswith("gone")}
    assert judge(holds, quiet, NOW, receive_count=3, max_receives=2).reason is not None
