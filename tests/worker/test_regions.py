"""Regions: whole tiles of the image grid, each tile in exactly one region."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.features import TileLayout
from tiling.grid import Window, axis_origins, tile_grid
from worker.regions import split_regions, tiles_per_region


def layout_of(bounds: Window, tile: int, overlap: int) -> TileLayout:
    cols = np.asarray(axis_origins(bounds.width, tile, overlap)) + bounds.col_off
    rows = np.asarray(axis_origins(bounds.height, tile, overlap)) + bounds.row_off
    return TileLayout(cols, rows, min(tile, bounds.width), min(tile, bounds.height))


def test_tiles_per_region() -> None:
    assert tiles_per_region(10240, 1024, 50) == 10  # 1024 + 9 * 974 = 9790 <= 10240
    assert tiles_per_region(512, 1024, 50) == 1  # never zero
    assert tiles_per_region(1024, 512, 64) == 2


def test_example_image_is_six_regions() -> None:
    bounds = Window(0, 0, 1500, 1000)
    tiles = tile_grid(bounds, 256, 32)
    regions = split_regions(tiles, layout_of(bounds, 256, 32), 512, 32)
    assert len(tiles) == 7 * 5
    # 2 tiles per region along each axis: 4 x 3 regions.
    assert len(regions) == 12
    assert [r.region_id for r in regions] == list(range(1, 13))
    first = regions[0].bounds
    assert (first.col_off, first.row_off) == (0, 0)
    assert max(first.width, first.height) <= 512
    assert (regions[-1].bounds.col_end, regions[-1].bounds.row_end) == (1500, 1000)


@settings(max_examples=200)
@given(
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
    tile=st.integers(16, 1024),
    overlap_fraction=st.floats(0, 0.9),
    region=st.integers(256, 6000),
    keep_every=st.integers(1, 4),
)
def test_regions_partition_the_tiles(
    width: int,
    height: int,
    tile: int,
    overlap_fraction: float,
    region: int,
    keep_every: int,
) -> None:
    overlap = int(tile * overlap_fraction)
    bounds = Window(7, 11, width, height)
    layout = layout_of(bounds, tile, overlap)
    tiles = tile_grid(bounds, tile, overlap)[::keep_every]  # a region of interest keeps some
    regions = split_regions(tiles, layout, region, overlap)

    assert [r.region_id for r in regions] == list(range(1, len(regions) + 1))
    members = [t for r in regions for t in r.tiles]
    assert sorted(members, key=lambda t: (t.row_off, t.col_off)) == sorted(
        tiles, key=lambda t: (t.row_off, t.col_off)
    )
    assert len(set(members)) == len(members)
    for r in regions:
        assert r.tiles, "no empty regions"
        for t in r.tiles:
            assert r.bounds.col_off <= t.col_off
            assert t.col_end <= r.bounds.col_end
            assert r.bounds.row_off <= t.row_off
            assert t.row_end <= r.bounds.row_end
        if region >= tile:
            assert max(r.bounds.width, r.bounds.height) <= region
