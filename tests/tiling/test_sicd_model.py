"""The SICD sensor model against sarpy's per-point projection, on the SCP's height or a DEM."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from sarpy.geometry import point_projection
from sarpy.geometry.geocoords import ecf_to_geodetic, geodetic_to_ecf

from tests.tiling.sicd_images import COLS, COLS_IN, ROWS, ROWS_IN, SCP_LLH, FloatArray, model_of
from tiling.dem import DemHeights
from tiling.grid import Window
from tiling.image import ImageInfo
from tiling.roi import region_in_pixels
from tiling.sicd import SicdSensorModel


def test_sicd_model_is_chosen(info: ImageInfo) -> None:
    assert isinstance(info.sensor_model(), SicdSensorModel)


def test_image_to_world_equals_sarpy_per_point(info: ImageInfo, reference: Any) -> None:
    structure = reference.get_sicds_as_tuple()[0]
    lons, lats = model_of(info).image_to_world(COLS_IN, ROWS_IN)
    for col, row, lon, lat in zip(COLS_IN, ROWS_IN, lons, lats, strict=True):
        # SICD addresses pixel centres: pixel coordinate (0.5, 0.5) is SICD (row 0, col 0).
        ecf = point_projection.image_to_ground([row - 0.5, col - 0.5], structure)
        ref_lat, ref_lon, ref_hae = ecf_to_geodetic(ecf)
        assert abs(lon - ref_lon) < 1e-7
        assert abs(lat - ref_lat) < 1e-7
        assert abs(ref_hae - SCP_LLH[2]) < 1e-3  # on the SCP's height


def test_scp_pixel_is_the_scp(info: ImageInfo) -> None:
    lons, lats = model_of(info).image_to_world(
        np.array([COLS / 2 + 0.5]), np.array([ROWS / 2 + 0.5])
    )
    assert abs(lats[0] - SCP_LLH[0]) < 1e-9
    assert abs(lons[0] - SCP_LLH[1]) < 1e-9


def test_world_to_image_inverts_image_to_world(info: ImageInfo) -> None:
    model = model_of(info)
    lons, lats = model.image_to_world(COLS_IN, ROWS_IN)
    cols, rows = model.world_to_image(lons, lats)
    assert np.abs(cols - COLS_IN).max() < 1e-3
    assert np.abs(rows - ROWS_IN).max() < 1e-3


def test_world_to_image_equals_sarpy(info: ImageInfo, reference: Any) -> None:
    structure = reference.get_sicds_as_tuple()[0]
    lons, lats = model_of(info).image_to_world(COLS_IN, ROWS_IN)
    cols, rows = model_of(info).world_to_image(lons, lats)
    llh = np.column_stack((lats, lons, np.full(lons.size, SCP_LLH[2])))
    image, _, _ = point_projection.ground_to_image_geo(llh, structure, tolerance=1e-6)
    assert np.abs(rows - 0.5 - image[:, 0]).max() < 1e-3
    assert np.abs(cols - 0.5 - image[:, 1]).max() < 1e-3


def test_empty_inputs(info: ImageInfo) -> None:
    empty = np.zeros(0)
    model = model_of(info)
    assert model.image_to_world(empty, empty)[0].size == 0
    assert model.world_to_image(empty, empty)[0].size == 0


def test_region_of_interest_through_the_sicd_model(info: ImageInfo) -> None:
    model = model_of(info)
    cols, rows = np.array([40.0, 160.0, 160.0, 40.0]), np.array([30.0, 30.0, 110.0, 110.0])
    lons, lats = model.image_to_world(cols, rows)
    wkt = shapely.Polygon(zip(lons, lats, strict=True)).wkt
    window, region = region_in_pixels(wkt, model, info.bounds)
    assert window == Window(40, 30, 120, 80)
    assert region.area == pytest.approx(120 * 80, rel=1e-6)


def write_dem(path: Path, heights: Any) -> str:
    """A 0.0001-degree WGS84 DEM around the scene; ``heights(lon, lat)`` at pixel centres."""
    transform = Affine(0.0001, 0.0, -77.01, 0.0, -0.0001, 38.91)
    rows, cols = np.mgrid[0:200, 0:200]
    lons, lats = -77.01 + (cols + 0.5) * 0.0001, 38.91 - (rows + 0.5) * 0.0001
    with rasterio.open(
        path, "w", driver="GTiff", width=200, height=200, count=1, dtype="float64",
        crs="EPSG:4326", transform=transform,
    ) as dst:  # fmt: skip
        dst.write(heights(lons, lats)[np.newaxis])
    return str(path)


def test_flat_dem_equals_sarpy_at_its_height(tmp_path: Path, info: ImageInfo) -> None:
    dem = write_dem(tmp_path / "flat.tif", lambda lon, lat: np.full(lon.shape, 400.0))
    model = model_of(info, dem)
    lons, lats = model.image_to_world(COLS_IN, ROWS_IN)
    points = np.column_stack((ROWS_IN - 0.5, COLS_IN - 0.5))
    ecf = point_projection.image_to_ground(points, model.structure, hae0=400.0)
    ref = ecf_to_geodetic(ecf)
    assert np.abs(lats - ref[:, 0]).max() < 1e-7
    assert np.abs(lons - ref[:, 1]).max() < 1e-7
    # 300 m above the SCP at the same range, points lie hundreds of metres further from the
    # sensor (east of where they are at the SCP's height).
    flat_lons, _ = model_of(info).image_to_world(COLS_IN, ROWS_IN)
    assert (lons - flat_lons).min() > 0.002


def test_sloped_dem_points_lie_on_it_and_map_back(tmp_path: Path, info: ImageInfo) -> None:
    def heights(lon: FloatArray, lat: FloatArray) -> FloatArray:
        return 100.0 + (lon + 77.01) * 2e4 + (lat - 38.9) * 1e4  # ~13 and ~5 degree slopes

    dem = write_dem(tmp_path / "slope.tif", heights)
    model = model_of(info, dem)
    lons, lats = model.image_to_world(COLS_IN, ROWS_IN)
    ecf = geodetic_to_ecf(np.column_stack((lats, lons, DemHeights(dem)(lons, lats))))
    # The DEM point of each result projects back to its pixel (sarpy, independently).
    image, _, _ = point_projection.ground_to_image(ecf, model.structure, tolerance=1e-6)
    assert np.abs(image[:, 0] + 0.5 - ROWS_IN).max() < 0.01
    assert np.abs(image[:, 1] + 0.5 - COLS_IN).max() < 0.01
    cols, rows = model.world_to_image(lons, lats)
    assert np.abs(cols - COLS_IN).max() < 0.01
    assert np.abs(rows - ROWS_IN).max() < 0.01


def test_dem_without_the_scene_leaves_points_at_the_scp_height(
    tmp_path: Path, info: ImageInfo
) -> None:
    far = tmp_path / "far.tif"
    with rasterio.open(
        far, "w", driver="GTiff", width=10, height=10, count=1, dtype="float32",
        crs="EPSG:4326", transform=Affine(0.01, 0.0, 10.0, 0.0, -0.01, 50.0),
    ) as dst:  # fmt: skip
        dst.write(np.full((1, 10, 10), 900.0, np.float32))
    got = np.stack(model_of(info, str(far)).image_to_world(COLS_IN, ROWS_IN))
    assert np.abs(got - np.stack(model_of(info).image_to_world(COLS_IN, ROWS_IN))).max() < 1e-12
    cols, rows = model_of(info, str(far)).world_to_image(got[0], got[1])
    assert np.abs(cols - COLS_IN).max() < 1e-3
    assert np.abs(rows - ROWS_IN).max() < 1e-3
