"""Telling a poison message from a message whose workers died for other reasons.

A message that comes back unsettled was held by a worker that stopped answering. That says
little on its own: in a fleet whose workers are being killed (spot reclaims, node drains, an
out-of-memory neighbour), any message in hand comes back now and then. A poison message is one
that kills the workers that work on it. The rule compares the two:

* Every worker keeps a *beat* in the fleet registry (:class:`FleetEntry`) every
  ``beat_interval_s``, and marks itself exited when it stops cleanly. A worker whose beat is
  older than ``STALE_BEATS`` intervals, and did not exit, died.
* Every time a worker starts working on a message it adds a :class:`Hold` to the message's
  history, and ends it when it settles or releases the message (with ``error`` when the attempt
  failed with an error). A hold that was never ended and whose worker died is a *death while
  working on it*; the time from the hold's start to the worker's last beat is how long it held
  the message.
* The fleet's death rate is the workers that died since the message's first hold (at most
  ``WINDOW_S`` back) per second of worker life in that time, leaving out the deaths of this
  message's own holders: the rate the message's holders were exposed to, not one diluted by
  quiet hours before a storm.
* A message is condemned for its holders' deaths when they died at least ``max_receives``
  times and a Poisson process at the fleet's death rate over the time they held it would give
  that many deaths with probability below ``POISON_P``; and whatever the fleet's death rate,
  once it has been received ``HARD_LIMIT_FACTOR x max_receives`` times.

Attempts that ended with an error are counted apart (``errors``): they bound retries, not
deaths. A receive whose worker died before it started working (a kill right after receiving)
is neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WINDOW_S = 600.0  # at most how far back the fleet's death rate looks
STALE_BEATS = 2.5  # a worker silent for this many beat intervals (and not exited) died
POISON_P = 0.001  # deaths less likely than this under the fleet's rate condemn the message
HARD_LIMIT_FACTOR = 4  # received this many times max_receives: condemned whatever the cause
BEAT_INTERVAL_MAX_S = 5.0


def beat_interval(visibility_timeout_s: float) -> float:
    """How often a worker beats: often enough that a worker that died holding a message looks
    dead by the time the message comes back (one visibility timeout later)."""
    return min(BEAT_INTERVAL_MAX_S, visibility_timeout_s / 4)


@dataclass(frozen=True, slots=True)
class FleetEntry:
    """One worker in the fleet registry."""

    started: float
    beat: float
    interval_s: float
    exited: bool = False

    def dead(self, now: float) -> bool:
        """Silent for too long without having exited."""
        return not self.exited and now - self.beat > STALE_BEATS * self.interval_s

    def alive_until(self, now: float) -> float:
        """When it was last known to be alive."""
        return self.beat if self.exited or self.dead(now) else now


@dataclass(frozen=True, slots=True)
class Hold:
    """One worker's attempt at a message."""

    worker: str
    since: float
    ended: float | None = None
    error: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a message's history says."""

    deaths: int
    errors: int
    expected_deaths: float
    reason: str | None = None


def fleet_death_rate(
    fleet: Mapping[str, FleetEntry],
    now: float,
    since: float,
    leave_out: frozenset[str] = frozenset(),
) -> float:
    """Deaths per second of worker life between ``since`` and ``now`` (``leave_out``: workers
    whose deaths are not counted)."""
    deaths = 0
    seconds = 0.0
    for worker, entry in fleet.items():
        seconds += max(0.0, entry.alive_until(now) - max(entry.started, since))
        if worker not in leave_out and entry.dead(now) and entry.beat + entry.interval_s >= since:
            deaths += 1
    return deaths / seconds if seconds > 0 else 0.0


def poisson_tail(count: int, mean: float) -> float:
    """P(N >= count) for N ~ Poisson(mean)."""
    if count <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    term = math.exp(-mean)
    below = term
    for k in range(1, count):
        term *= mean / k
        below += term
    return max(0.0, 1.0 - below)


def _held_s(hold: Hold, entry: FleetEntry | None) -> float:
    """How long a dead holder worked on the message (half a beat past its last beat)."""
    if entry is None:
        return BEAT_INTERVAL_MAX_S / 2
    return max(0.0, entry.beat - hold.since) + entry.interval_s / 2


def judge(
    holds: Sequence[Hold],
    fleet: Mapping[str, FleetEntry],
    now: float,
    receive_count: int,
    max_receives: int,
) -> Verdict:
    """The verdict on a message about to be worked on again (``holds``: its earlier ones)."""
    dead_holds = [
        hold
        for hold in holds
        if hold.ended is None and (hold.worker not in fleet or fleet[hold.worker].dead(now))
    ]
    errors = sum(1 for hold in holds if hold.ended is not None and hold.error)
    holders = frozenset(hold.worker for hold in dead_holds)
    since = max([now - WINDOW_S, *(hold.since for hold in holds[:1])])
    rate = fleet_death_rate(fleet, now, since, leave_out=holders)
    held_s = sum(_held_s(hold, fleet.get(hold.worker)) for hold in dead_holds)
    held_s += sum(hold.ended - hold.since for hold in holds if hold.ended is not None)
    deaths = len(dead_holds)
    expected = rate * held_s
    reason = None
    if receive_count > HARD_LIMIT_FACTOR * max_receives:
        reason = (
            f"message received {receive_count} times without finishing ({deaths} of its"
            f" workers died working on it; limit {HARD_LIMIT_FACTOR} x"
            f" MODELRUNNER_MAX_RECEIVES={max_receives})"
        )
    elif errors >= max_receives:
        reason = (
            f"message failed with an error {errors} times (limit"
            f" MODELRUNNER_MAX_RECEIVES={max_receives})"
        )
    elif deaths >= max_receives and poisson_tail(deaths, expected) < POISON_P:
        reason = (
            f"{deaths} workers died working on this message (the fleet's death rate explains"
            f" {expected:.2f}; limit MODELRUNNER_MAX_RECEIVES={max_receives})"
        )
    return Verdict(deaths, errors, expected, reason)
