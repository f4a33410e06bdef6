"""Tile grid laws and the reference-compatible cases."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiling.errors import InvalidGridError
from tiling.grid import Window, axis_origins, count_tiles, tile_grid


def test_reference_case_63_tiles() -> None:
    tiles = tile_grid(Window(0, 0, 3376, 2576), 512, 128)
    assert len(tiles) == 63
    xs = sorted({t.col_off for t in tiles})
    ys = sorted({t.row_off for t in tiles})
    assert xs == [0, 358, 716, 1074, 1432, 1790, 2148, 2506, 2864]
    assert ys == [0, 344, 688, 1032, 1376, 1720, 2064]
    assert all(t.width == 512 and t.height == 512 for t in tiles)


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (1024, 512, 256, [0, 256, 512]),
        (512, 1024, 50, [0]),
        (1024, 1024, 50, [0]),
        (1025, 1024, 50, [0, 1]),
        (1, 1, 0, [0]),
    ],
)
def test_axis_origins_table(length: int, tile: int, overlap: int, expected: list[int]) -> None:
    assert axis_origins(length, tile, overlap) == expected


def test_10000_side_has_26_tiles_and_reaches_the_edge() -> None:
    origins = axis_origins(10000, 512, 128)
    assert len(origins) == 26
    assert origins[-1] + 512 == 10000


def test_offset_bounds_shift_tiles() -> None:
    tiles = tile_grid(Window(100, 200, 600, 300), 512, 64)
    assert tiles[0] == Window(100, 200, 512, 300)
    assert tiles[-1].col_end == 700
    assert count_tiles(Window(100, 200, 600, 300), 512, 64) == len(tiles)


@pytest.mark.parametrize(("tile", "overlap"), [(512, 512), (512, 600), (0, 0), (512, -1)])
def test_invalid_grid_is_rejected(tile: int, overlap: int) -> None:
    with pytest.raises(InvalidGridError, match="tile"):
        axis_origins(1000, tile, overlap)


@given(
    length=st.integers(1, 20000),
    tile=st.integers(1, 4096),
    overlap_frac=st.floats(0, 0.99),
)
def test_axis_laws(length: int, tile: int, overlap_frac: float) -> None:
    overlap = min(int(tile * overlap_frac), tile - 1)
    origins = axis_origins(length, tile, overlap)
    size = min(tile, length)
    assert origins[0] == 0
    assert origins[-1] + size == length  # covers to the edge
    assert all(o >= 0 and o + size <= length for o in origins)  # inside the image
    for a, b in itertools.pairwise(origins):
        assert a + size - b >= overlap  # overlap at least the request
        assert b > a
    strides = {b - a for a, b in itertools.pairwise(origins)}
    assert not strides or max(strides) - min(strides) <= 1


@given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    tile=st.integers(16, 1024),
    overlap=st.integers(0, 8),
)
def test_tiles_cover_every_pixel(width: int, height: int, tile: int, overlap: int) -> None:
    tiles = tile_grid(Window(0, 0, width, height), tile, overlap)
    cols = sorted({(t.col_off, t.col_end) for t in tiles})
    rows = sorted({(t.row_off, t.row_end) for t in tiles})
    for spans, length in ((cols, width), (rows, height)):
        reach = 0
        for start, end in spans:
            assert start <= reach
            reach = max(reach, end)
        assert reach == length
