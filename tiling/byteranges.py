"""Which bytes of an image file a run of tiles needs, and the few large reads that fetch them.

Pure functions on plain values; no I/O. The input is, per tile (in the order the tiles will be
read), the byte ranges of the source blocks under its window. The output is a read plan: large
reads that together cover every needed block exactly once, each block inside one read (reads
are cut at block boundaries only), the reads in the order the tiles first need them, and per
tile the reads it needs, so that a read can be dropped once its last tile has been read.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class ByteRange:
    """Bytes ``start`` to ``end`` (exclusive) of a file."""

    start: int
    end: int

    @property
    def size(self) -> int:
        """How many bytes."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Reads in file order, the order to fetch them in, and the reads each tile needs."""

    reads: tuple[ByteRange, ...]  # sorted by start, disjoint
    order: tuple[int, ...]  # indices into ``reads``, by the first tile that needs each
    tile_reads: tuple[tuple[int, ...], ...]  # per tile, indices into ``reads``

    @property
    def total_bytes(self) -> int:
        """Bytes fetched by the whole plan."""
        return sum(r.size for r in self.reads)

    def read_at(self, offset: int) -> int | None:
        """The index of the read holding byte ``offset``, None if no read holds it."""
        index = bisect.bisect_right(self.reads, ByteRange(offset, 1 << 62)) - 1
        if index >= 0 and self.reads[index].start <= offset < self.reads[index].end:
            return index
        return None


def _runs(blocks: list[ByteRange], max_gap: int) -> list[list[ByteRange]]:
    """Sorted, distinct blocks grouped into runs whose gaps are at most ``max_gap`` bytes."""
    runs: list[list[ByteRange]] = []
    for block in blocks:
        if runs and block.start - runs[-1][-1].end <= max_gap:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs


def _cut(run: list[ByteRange], target: int) -> list[ByteRange]:
    """A run cut at block boundaries into reads of about ``target`` bytes (none under half)."""
    reads: list[ByteRange] = []
    start = run[0].start
    for block, following in zip(run, [*run[1:], None], strict=True):
        if following is None:
            if reads and block.end - start < target // 2:  # a short tail joins the last read
                reads[-1] = ByteRange(reads[-1].start, block.end)
            else:
                reads.append(ByteRange(start, block.end))
        elif block.end - start >= target:
            reads.append(ByteRange(start, block.end))
            start = max(following.start, block.end)  # blocks' margins may overlap
    return reads


def plan_reads(
    tile_blocks: Sequence[Sequence[ByteRange]], target_bytes: int, max_gap_bytes: int = 65536
) -> ReadPlan:
    """Plan the reads for tiles needing ``tile_blocks`` (per tile, its blocks' byte ranges).

    Blocks closer than ``max_gap_bytes`` are fetched in one read with the bytes between them;
    runs are cut into reads of about ``target_bytes`` at block boundaries.
    """
    blocks = sorted({b for tile in tile_blocks for b in tile if b.size > 0})
    reads = [r for run in _runs(blocks, max_gap_bytes) for r in _cut(run, target_bytes)]
    starts = [r.start for r in reads]

    def reads_of(block: ByteRange) -> range:
        """The reads a block lies in: one, or two where blocks' margins overlap."""
        first = max(0, bisect.bisect_right(starts, block.start) - 1)
        return range(first, bisect.bisect_right(starts, block.end - 1))

    tile_reads = tuple(
        tuple(sorted({i for b in tile if b.size > 0 for i in reads_of(b)})) for tile in tile_blocks
    )
    order: dict[int, None] = {}
    for needed in tile_reads:
        order.update(dict.fromkeys(needed))
    return ReadPlan(tuple(reads), tuple(order), tile_reads)


def interleave(lanes: Sequence[Sequence[int]]) -> list[int]:
    """Items of several lanes read side by side, in the order they will be needed: the first
    of each lane, then the second of each, and so on."""
    merged: list[int] = []
    for step in range(max((len(lane) for lane in lanes), default=0)):
        merged.extend(lane[step] for lane in lanes if step < len(lane))
    return merged
