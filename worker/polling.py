"""Receiving from the region and image queues: an idle worker takes either kind at once.

With room for two or more messages, one long poll is kept open on each queue, so a message on
either is taken as soon as it arrives (a region does not wait out an image poll, nor an image a
region poll). Never more polls are open than the worker has room for, so what they bring is
always taken, never received only to be put back. With room for one, the queues are polled in
turn, regions first (a short wait), then images (a long poll).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from worker.ports import MessageQueue, QueueMessage
from worker.settling import Work


@dataclass(frozen=True, slots=True)
class Source:
    """A queue to poll, its waits and the kind of message it holds."""

    queue: MessageQueue
    wait_s: int  # when polled in turn
    is_region: bool


class Poller:
    """The polls open on the queues and what they brought."""

    def __init__(
        self, regions: Source, images: Source, long_wait_s: int, visibility_s: int
    ) -> None:
        """Poll ``regions`` and ``images`` (each waiting ``long_wait_s`` when both are open)."""
        self._sources = (regions, images)
        self._long_wait_s = long_wait_s
        self._visibility_s = visibility_s
        self._open: dict[int, asyncio.Task[list[QueueMessage]]] = {}
        self._turn = 0
        self._ready: list[Work] = []

    @property
    def open_polls(self) -> int:
        """Polls in flight: messages that may arrive and need room."""
        return len(self._open)

    async def next(self, room: int, wake: Iterable[asyncio.Future[Any]]) -> list[Work]:
        """What the next poll to return brought (regions first), or nothing if one of
        ``wake`` finished first (a stop, or work done: more room); ``room``: how many more
        messages the worker can take.

        A failed poll's error is raised; what other polls brought is kept for the next call.
        """
        if self._ready:
            ready, self._ready = self._ready, []
            return ready
        if room >= len(self._sources):
            for index in range(len(self._sources)):
                if index not in self._open:
                    self._start(index, self._long_wait_s)
        elif room >= 1 and not self._open:
            self._start(self._turn, self._sources[self._turn].wait_s)
        if not self._open:
            return []
        waiting: set[asyncio.Future[Any]] = {*self._open.values(), *wake}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        return self._collect()

    async def close(self) -> list[Work]:
        """Wait for the polls still open (a receive cannot be called back without hiding its
        message until its visibility timeout); what they brought, to be released (a failed
        poll brought nothing)."""
        if self._open:
            await asyncio.wait(set(self._open.values()))
        self._gather()
        ready, self._ready = self._ready, []
        return ready

    def _start(self, index: int, wait_s: int) -> None:
        queue = self._sources[index].queue
        self._open[index] = asyncio.create_task(queue.receive(1, wait_s, self._visibility_s))

    def _collect(self) -> list[Work]:
        if (error := self._gather()) is not None:
            raise error
        ready, self._ready = self._ready, []
        return ready

    def _gather(self) -> BaseException | None:
        """Move what the finished polls brought to the ready list; the first poll's error."""
        error: BaseException | None = None
        single = len(self._open) == 1
        for index, source in enumerate(self._sources):
            task = self._open.get(index)
            if task is None or not task.done():
                continue
            del self._open[index]
            if (failed := task.exception()) is not None:
                error = error or failed
                continue
            messages = task.result()
            self._ready += [Work(source.queue, m, source.is_region) for m in messages]
            # Polled in turn: after an empty poll the other queue; after work, regions first.
            if single and not messages:
                self._turn = (index + 1) % len(self._sources)
            else:
                self._turn = 0
        return error
