"""Read-ahead of a region's source bytes from S3: few large ranged GETs, each byte fetched once.

GDAL reading an ``s3://`` image through /vsis3 issues a ranged GET per window (or per block
run), one at a time per handle, and two encoder handles fetch the blocks they share twice. On
S3 every GET costs 20 to 100 ms of first-byte latency and a request charge; on the local
stack's emulator every GET of a large object costs about 185 ms whatever its size. So a
region's reads are planned instead (:mod:`tiling.byteranges`): GDAL's own block index says
where the blocks under the region's tiles are, they are coalesced into reads of about
``read_range_mb`` cut at block boundaries, and those are fetched in the order the encoders
will need them, ``read_requests`` at a time, while the bytes held stay under
``read_ahead_mb``. GDAL then decodes the tiles from memory (:mod:`tiling.vsiplugin`), and a
read is dropped as soon as the last tile that needs it has been read.

Reads GDAL makes outside the plan (the header, anything unexpected) are served from aligned
chunks fetched on demand and kept in a small LRU. An image whose driver does not say where its
blocks are (NITF) is read entirely that way, with larger chunks and the next chunk fetched
ahead of a reader moving forward through the file. Every GET and byte is counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tiling.blockmap import plan_window_reads
from tiling.byteranges import ReadPlan, interleave
from tiling.gdalenv import ReadCredentials
from tiling.grid import Window
from tiling.vsiplugin import serving
from worker.metrics import tile_stats
from worker.s3ranges import Bytes, RangeFetcher, S3Ranges

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

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
        fetcher: RangeFetcher,
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


@dataclass(frozen=True)
class ReadAheadSettings:
    """How much to read ahead and how."""

    range_bytes: int
    budget_bytes: int
    requests: int
    wait_s: float


@dataclass
class RegionSource:
    """A region's reads in progress: the GDAL path to open and what was fetched."""

    path: str
    reads: RegionReads
    ranges: S3Ranges
    plan: ReadPlan | None

    @property
    def planned_bytes(self) -> int:
        """Bytes the plan reads (0 without a plan)."""
        return self.plan.total_bytes if self.plan is not None else 0


ClientMaker = Callable[..., AbstractAsyncContextManager[Any]]


def _need_order(bands: Sequence[Sequence[Window]]) -> list[Window]:
    """The tiles of encoders reading their bands side by side, in the order they are needed."""
    flat = [w for band in bands for w in band]
    starts = [sum(len(b) for b in bands[:i]) for i in range(len(bands))]
    lanes = [range(start, start + len(band)) for start, band in zip(starts, bands, strict=True)]
    return [flat[i] for i in interleave(lanes)]


def report_reads(job_id: str, url: str, source: RegionSource, tiles: int, image_bytes: int) -> None:
    """Log what a region fetched and add it to the region's tile statistics."""
    ranges = source.ranges
    log.info(
        "job %s image %s: %d tiles read in %d S3 GETs, %.1f MiB (%.2f of the image's %.1f MiB;"
        " %s; %d refetched)",
        job_id,
        url,
        tiles,
        ranges.gets,
        ranges.bytes_read / 2**20,
        ranges.bytes_read / max(1, image_bytes),
        image_bytes / 2**20,
        "planned" if source.plan is not None else "chunked, no block index",
        source.reads.refetches,
    )
    if (stats := tile_stats()) is not None:
        stats.s3_gets += ranges.gets
        stats.s3_bytes_read += ranges.bytes_read


class ReadAhead:
    """Builds a region's read-ahead from S3 for an image, under its read credentials."""

    def __init__(self, s3: S3Client, make_client: ClientMaker, settings: ReadAheadSettings) -> None:
        """Read with ``s3`` (the worker's keys) or a client ``make_client(**keys)`` builds."""
        self._s3 = s3
        self._make_client = make_client
        self._settings = settings
        self._budget = ByteBudget(settings.budget_bytes)

    @asynccontextmanager
    async def region(
        self,
        url: str,
        credentials: ReadCredentials | None,
        bands: Sequence[Sequence[Window]],
        run_in_thread: Callable[..., Any],
    ) -> AsyncIterator[RegionSource]:
        """Plan and start fetching the bytes under ``bands`` (the encoders' tiles) of ``url``.

        Raises:
            OSError: If the object cannot be read.
        """
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if credentials is None:
            async with self._open(self._s3, bucket, key, bands, run_in_thread) as source:
                yield source
            return
        keys = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
            "aws_session_token": credentials.session_token,
        }
        async with (
            self._make_client(**keys) as client,
            self._open(client, bucket, key, bands, run_in_thread) as source,
        ):
            yield source

    @asynccontextmanager
    async def _open(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        bands: Sequence[Sequence[Window]],
        run_in_thread: Callable[..., Any],
    ) -> AsyncIterator[RegionSource]:
        settings = self._settings
        ranges = S3Ranges(client, bucket, key)
        size = await ranges.size()
        reads = RegionReads(
            ranges,
            size,
            asyncio.get_running_loop(),
            self._budget,
            settings.requests,
            settings.wait_s,
        )
        try:
            with serving(reads, key) as path:
                tiles = _need_order(bands)
                plan = await run_in_thread(plan_window_reads, path, tiles, settings.range_bytes)
                reads.follow(plan, tiles)
                yield RegionSource(path, reads, ranges, plan)
        finally:
            await reads.aclose()
