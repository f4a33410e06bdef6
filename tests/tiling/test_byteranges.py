"""Read plans: every needed block fetched once, in few reads cut at block boundaries."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from tiling.byteranges import ByteRange, interleave, plan_reads

BLOCK = 1000


def blocks(*numbers: int) -> list[ByteRange]:
    return [ByteRange(n * BLOCK, (n + 1) * BLOCK) for n in numbers]


def test_contiguous_blocks_make_reads_of_the_target_size() -> None:
    plan = plan_reads([blocks(*range(10)), blocks(*range(5, 20))], target_bytes=4 * BLOCK)
    assert plan.reads == (
        ByteRange(0, 4 * BLOCK),
        ByteRange(4 * BLOCK, 8 * BLOCK),
        ByteRange(8 * BLOCK, 12 * BLOCK),
        ByteRange(12 * BLOCK, 16 * BLOCK),
        ByteRange(16 * BLOCK, 20 * BLOCK),
    )
    assert plan.tile_reads == ((0, 1, 2), (1, 2, 3, 4))
    assert plan.total_bytes == 20 * BLOCK


def test_a_short_tail_joins_the_last_read_and_gaps_split_runs() -> None:
    plan = plan_reads([blocks(0, 1, 2, 3, 4, 50)], target_bytes=4 * BLOCK, max_gap_bytes=BLOCK)
    assert plan.reads == (ByteRange(0, 5 * BLOCK), ByteRange(50 * BLOCK, 51 * BLOCK))


def test_small_gaps_are_read_through() -> None:
    plan = plan_reads([blocks(0, 2, 4)], target_bytes=100 * BLOCK, max_gap_bytes=BLOCK)
    assert plan.reads == (ByteRange(0, 5 * BLOCK),)


def test_reads_come_in_the_order_tiles_need_them() -> None:
    plan = plan_reads([blocks(30), blocks(0), blocks(30, 10)], target_bytes=BLOCK, max_gap_bytes=0)
    assert [plan.reads[i].start for i in plan.order] == [30 * BLOCK, 0, 10 * BLOCK]
    assert plan.read_at(30 * BLOCK + 5) == plan.order[0]
    assert plan.read_at(20 * BLOCK) is None


def test_interleave_follows_lanes_side_by_side() -> None:
    assert interleave([[0, 1, 2], [10, 11], [20]]) == [0, 10, 20, 1, 11, 2]


@given(
    st.lists(st.lists(st.integers(0, 200), max_size=12), min_size=1, max_size=30),
    st.integers(1, 50),
    st.integers(0, 3),
)
def test_every_block_is_in_exactly_one_read_of_its_tiles(
    tiles: list[list[int]], target_blocks: int, gap_blocks: int
) -> None:
    tile_blocks = [blocks(*numbers) for numbers in tiles]
    plan = plan_reads(
        tile_blocks, target_bytes=target_blocks * BLOCK, max_gap_bytes=gap_blocks * BLOCK
    )
    reads = plan.reads
    assert all(a.end <= b.start for a, b in itertools.pairwise(reads))  # disjoint
    assert sorted(plan.order) == list(range(len(reads)))
    for needed, numbers in zip(plan.tile_reads, tiles, strict=True):
        for block in blocks(*numbers):
            holding = [
                i for i, r in enumerate(reads) if r.start <= block.start and block.end <= r.end
            ]
            assert len(holding) == 1  # whole, in one read: reads are cut at block boundaries
            assert holding[0] in needed
    fetched = sum(r.size for r in reads)
    distinct = {n for numbers in tiles for n in numbers}
    if gap_blocks == 0:
        assert fetched == len(distinct) * BLOCK  # nothing but the blocks, each once
    elif distinct:
        assert fetched <= (max(distinct) - min(distinct) + 1) * BLOCK
