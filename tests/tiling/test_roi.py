"""Region of interest to pixels and tiles, with a projected (UTM) affine sensor model."""

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS

from tiling.grid import Window, tile_grid
from tiling.roi import RegionError, region_in_pixels, tiles_in_region
from tiling.sensor import AffineSensorModel

MODEL = AffineSensorModel(Affine(0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0), CRS.from_epsg(32618))
IMAGE = Window(0, 0, 2048, 2048)


def wkt_of_pixels(cols: list[float], rows: list[float]) -> str:
    lons, lats = MODEL.image_to_world(np.array(cols, float), np.array(rows, float))
    return shapely.Polygon(zip(lons, lats, strict=True)).wkt


def test_world_to_image_inverts_image_to_world() -> None:
    cols, rows = np.array([0.0, 100.5, 2047.0]), np.array([3.0, 999.25, 2048.0])
    back = MODEL.world_to_image(*MODEL.image_to_world(cols, rows))
    np.testing.assert_allclose(back[0], cols, atol=1e-6)
    np.testing.assert_allclose(back[1], rows, atol=1e-6)


def test_region_bounds_and_clipping() -> None:
    wkt = wkt_of_pixels([100, 700, 700, 100], [100, 100, 700, 700])
    window, region = region_in_pixels(wkt, MODEL, IMAGE)
    assert window == Window(100, 100, 600, 600)
    assert region.area == pytest.approx(600 * 600, rel=1e-6)
    clipped, _ = region_in_pixels(
        wkt_of_pixels([-50, 300, 300, -50], [0, 0, 300, 300]), MODEL, IMAGE
    )
    assert clipped == Window(0, 0, 300, 300)


def test_region_outside_the_image() -> None:
    wkt = wkt_of_pixels([3000, 3500, 3500, 3000], [0, 0, 500, 500])
    with pytest.raises(RegionError, match="does not overlap the image"):
        region_in_pixels(wkt, MODEL, IMAGE)


def test_only_tiles_overlapping_an_l_shaped_region() -> None:
    region = shapely.Polygon([(0, 0), (1024, 0), (1024, 256), (256, 256), (256, 1024), (0, 1024)])
    tiles = tile_grid(Window(0, 0, 1024, 1024), 256, 0)
    kept = tiles_in_region(tiles, region)
    assert {(t.col_off, t.row_off) for t in kept} == {
        (0, 0),
        (256, 0),
        (512, 0),
        (768, 0),
        (0, 256),
        (0, 512),
        (0, 768),
    }
