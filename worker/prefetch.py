"""A region's bytes fetched ahead within a byte budget, served to GDAL's reads from memory.

:class:`RegionReads` follows a read plan (:mod:`tiling.byteranges`): it fetches the planned
reads in the order the encoders need them, a few at a time, under a worker-wide
:class:`ByteBudget`, drops a read once its last tile has been read, and serves reads outside the
plan (headers) from aligned chunks in a small LRU. Used by :mod:`worker.readahead`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

from tiling.byteranges import ReadPlan
from tiling.grid import Window
from worker.ports import Bytes, ObjectRanges

log = logging.getLogger(__name__)

HEADER_CHUNK_BYTES = 256 << 10  # chunks for reads outside the plan (headers)
HEADER_CACHE_BYTES = 16 << 20
SEQUENTIAL_CHUNK_BYTES = 8 << 20  # chunks of an image read without a plan


class ByteBudget:
    """The bytes fetched ahead, held by all the regions a worker reads at once (thread-safe).

    A read ahead waits for room; a read a reader is waiting for never does (it is taken even
    past the budget, so that no reader can wait on a budget that only readers free).
    """

    def __init__(self, capacity: int) -> None:
        """Allow ``capacity`` bytes (always at least one read)."""
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()
        self._waiters: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}

    def try_take(self, size: int) -> bool:
        """Take ``size`` bytes if there is room."""
        with self._lock:
            if self.used and self.used + size > self.capacity:
                return False
            self.used += size
            return True

    def take(self, size: int) -> None:
        """Take ``size`` bytes, room or not."""
        with self._lock:
            self.used += size

    def give(self, size: int) -> None:
        """Give ``size`` bytes back and wake whoever waits for room."""
        with self._lock:
            self.used -= size
            waiters = list(self._waiters.items())
        for event, loop in waiters:
            loop.call_soon_threadsafe(event.set)

    def watch(self, event: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        """Set ``event`` (on ``loop``) whenever bytes are given back."""
        with self._lock:
            self._waiters[event] = loop

    def unwatch(self, event: asyncio.Event) -> None:
        """Stop setting ``event``."""
        with self._lock:
            self._waiters.pop(event, None)


class RegionReads:
    """The bytes of one image for one region's tiles, fetched ahead (a :class:`ByteSource`).

    Readers (GDAL, on encoder threads) call :meth:`read_into` and :meth:`done`; fetches run
    as tasks on ``loop``.
    """

    def __init__(
        self,
        fetcher: ObjectRanges,
        size: int,
        loop: asyncio.AbstractEventLoop,
        budget: ByteBudget,
        requests: int,
        wait_s: float,
    ) -> None:
        """Serve ``size`` bytes fetched through ``fetcher``; fetch ahead within ``budget``,
        with ``requests`` GETs in flight; a reader waits ``wait_s`` at most."""
        self.size = size
        self._fetcher = fetcher
        self._loop = loop
        self._budget = budget
        self._wait_s = wait_s
        self._requests = asyncio.Semaphore(requests)
        self._lock = threading.Lock()
        self._plan: ReadPlan | None = None
        self._tile_of: dict[Window, int] = {}
        self._refs: list[int] = []
        self._pieces: dict[int, concurrent.futures.Future[Bytes]] = {}
        self._reserved = 0
        self._room = asyncio.Event()
        self._chunk_bytes = HEADER_CHUNK_BYTES
        self._chunk_budget = HEADER_CACHE_BYTES
        self._chunks: OrderedDict[tuple[int, int], concurrent.futures.Future[Bytes]] = OrderedDict()
        self._prefetch: asyncio.Task[None] | None = None
        self.refetches = 0

    # -- planning (event loop) ---------------------------------------------------------

    def follow(self, plan: ReadPlan | None, tiles: Sequence[Window]) -> None:
        """Fetch ``plan``'s reads ahead of ``tiles`` (in need order); without a plan, read
        the file in large chunks, each fetched when first needed and the next one ahead."""
        if plan is None:
            self._chunk_bytes = SEQUENTIAL_CHUNK_BYTES
            self._chunk_budget = max(self._budget.capacity // 2, 4 * SEQUENTIAL_CHUNK_BYTES)
            return
        with self._lock:
            self._plan = plan
            self._tile_of = {window: index for index, window in enumerate(tiles)}
            self._refs = [0] * len(plan.reads)
            for needed in plan.tile_reads:
                for read in needed:
                    self._refs[read] += 1
        self._prefetch = self._loop.create_task(self._fetch_ahead(plan))

    async def _fetch_ahead(self, plan: ReadPlan) -> None:
        self._budget.watch(self._room, self._loop)
        try:
            for index in plan.order:
                size = plan.reads[index].size
                while True:
                    self._room.clear()
                    with self._lock:
                        if index in self._pieces or self._refs[index] == 0:
                            break
                        if self._budget.try_take(size):
                            self._launch(index, taken=True)
                            break
                    await self._room.wait()
        finally:
            self._budget.unwatch(self._room)

    def _launch(self, index: int, taken: bool = False) -> concurrent.futures.Future[Bytes]:
        """Start fetching planned read ``index`` (lock held); ``taken``: its bytes are
        already taken from the budget."""
        assert self._plan is not None
        read = self._plan.reads[index]
        if not taken:
            self._budget.take(read.size)
        self._reserved += read.size
        future = asyncio.run_coroutine_threadsafe(self._get(read.start, read.end), self._loop)
        self._pieces[index] = future
        return future

    async def _get(self, start: int, end: int) -> Bytes:
        async with self._requests:
            return await self._fetcher.fetch(start, end)

    # -- reading (encoder threads) -----------------------------------------------------

    def read_into(self, offset: int, length: int, address: int) -> int:
        """Copy bytes to GDAL's buffer, waiting for them if they are still on their way.

        Raises:
            OSError: If the bytes could not be fetched.
        """
        end = min(offset + length, self.size)
        position = offset
        while position < end:
            start, data = self._bytes_at(position)
            count = min(end, start + data.size) - position
            if count <= 0 or position < start:
                raise OSError(f"fetched bytes {start}-{start + data.size} miss {position}")
            ctypes.memmove(address + position - offset, data.ctypes.data + position - start, count)
            position += count
        return max(0, end - offset)

    def _bytes_at(self, offset: int) -> tuple[int, Bytes]:
        """Where the fetched bytes holding ``offset`` start, and those bytes.

        Raises:
            OSError: If they could not be fetched.
        """
        plan = self._plan
        index = plan.read_at(offset) if plan is not None else None
        if plan is not None and index is not None:
            with self._lock:
                future = self._pieces.get(index)
                if future is None:
                    if self._refs[index] == 0:
                        self.refetches += 1
                    future = self._launch(index)
            return plan.reads[index].start, self._wait(future)
        return self._chunk_at(offset)

    def _chunk_at(self, offset: int) -> tuple[int, Bytes]:
        size = self._chunk_bytes
        key = (size, offset // size)
        with self._lock:
            future = self._chunk(key)
            ahead = (size, key[1] + 1)
            if size == SEQUENTIAL_CHUNK_BYTES and ahead[1] * size < self.size:
                self._chunk(ahead)  # a reader moving forward finds the next chunk fetched
        return key[1] * size, self._wait(future)

    def _chunk(self, key: tuple[int, int]) -> concurrent.futures.Future[Bytes]:
        """The chunk's fetch, started if need be; the least recently used go (lock held)."""
        future = self._chunks.get(key)
        if future is not None:
            self._chunks.move_to_end(key)
            return future
        size, number = key
        start = number * size
        coroutine = self._get(start, min(self.size, start + size))
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        self._chunks[key] = future
        while len(self._chunks) * size > self._chunk_budget and len(self._chunks) > 2:  # noqa: PLR2004
            self._chunks.popitem(last=False)
        return future

    def _wait(self, future: concurrent.futures.Future[Bytes]) -> Bytes:
        try:
            return future.result(self._wait_s)
        except concurrent.futures.TimeoutError as err:
            raise OSError(f"no bytes after {self._wait_s:.0f}s") from err
        except concurrent.futures.CancelledError as err:  # the region's reads were stopped
            raise OSError("the fetch was cancelled") from err

    def done(self, window: Window) -> None:
        """The tile of ``window`` has been read: drop the reads no other tile needs."""
        plan = self._plan
        if plan is None:
            return
        index = self._tile_of.get(window)
        if index is None:
            return
        freed = 0
        with self._lock:
            for read in plan.tile_reads[index]:
                self._refs[read] -= 1
                if self._refs[read] == 0 and self._pieces.pop(read, None) is not None:
                    self._reserved -= plan.reads[read].size
                    freed += plan.reads[read].size
        if freed:
            self._budget.give(freed)

    async def aclose(self) -> None:
        """Stop fetching ahead and drop every byte held."""
        if self._prefetch is not None:
            self._prefetch.cancel()
            await asyncio.gather(self._prefetch, return_exceptions=True)
        with self._lock:
            pending = [*self._pieces.values(), *self._chunks.values()]
            self._pieces.clear()
            self._chunks.clear()
            reserved, self._reserved = self._reserved, 0
        self._budget.give(reserved)
        for future in pending:
            future.cancel()
