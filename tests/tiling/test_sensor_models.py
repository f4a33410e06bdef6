"""RPC and GCP sensor models against independent references.

RPC: an RPC00B forward model written here in numpy (ground -> image, the direction the
coefficients define) checks GDAL's iterative image -> ground solution, and the per-tile
vectorised path must equal rasterio's per-point transform. GCP: control points placed by an
affine UTM transform must give what pyproj gives for that transform.
"""

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import rasterio
import rasterio.transform
from affine import Affine
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.rpc import RPC
from rasterio.shutil import copy

from tiling.image import describe_image
from tiling.sensor import AffineSensorModel, GcpSensorModel, RpcSensorModel

FloatArray = npt.NDArray[np.float64]


def coefficients(**terms: float) -> list[float]:
    """20 RPC00B coefficients from named terms (L = lon, P = lat, H = height)."""
    order = [
        "1", "L", "P", "H", "LP", "LH", "PH", "LL", "PP", "HH",
        "PLH", "LLL", "LPP", "LHH", "LLP", "PPP", "PHH", "LLH", "PPH", "HHH",
    ]  # fmt: skip
    return [terms.get(name, 0.0) for name in order]


RPCS = RPC(
    height_off=120.0,
    height_scale=500.0,
    lat_off=38.88,
    lat_scale=0.04,
    long_off=-77.03,
    long_scale=0.05,
    line_off=4000.0,
    line_scale=4000.0,
    samp_off=5000.0,
    samp_scale=5000.0,
    line_num_coeff=coefficients(P=-1.0, L=0.02, H=0.01, LP=0.003, PP=-0.002),
    line_den_coeff=coefficients(**{"1": 1.0, "L": 0.001}),
    samp_num_coeff=coefficients(L=1.0, P=0.03, H=-0.015, LL=0.004, LH=0.001),
    samp_den_coeff=coefficients(**{"1": 1.0, "P": -0.002}),
)


def rpc_forward(rpcs: RPC, lon: FloatArray, lat: FloatArray, h: FloatArray) -> FloatArray:
    """Ground -> (col, row) from the RPC00B polynomials, independently of GDAL."""
    L = (lon - rpcs.long_off) / rpcs.long_scale
    P = (lat - rpcs.lat_off) / rpcs.lat_scale
    H = (h - rpcs.height_off) / rpcs.height_scale
    one = np.ones_like(L)
    terms = np.stack([
        one, L, P, H, L * P, L * H, P * H, L * L, P * P, H * H,
        P * L * H, L**3, L * P * P, L * H * H, L * L * P, P**3, P * H * H, L * L * H, P * P * H,
        H**3,
    ])  # fmt: skip

    def ratio(num: list[float], den: list[float]) -> FloatArray:
        result: FloatArray = np.asarray(num) @ terms / (np.asarray(den) @ terms)
        return result

    line = ratio(rpcs.line_num_coeff, rpcs.line_den_coeff) * rpcs.line_scale + rpcs.line_off
    samp = ratio(rpcs.samp_num_coeff, rpcs.samp_den_coeff) * rpcs.samp_scale + rpcs.samp_off
    # RPC lines/samples address pixel centres; pixel coordinates here have the origin at the
    # top-left corner of the first pixel.
    return np.stack([samp + 0.5, line + 0.5], axis=1)


GRID_COLS, GRID_ROWS = (
    a.ravel() for a in np.meshgrid(np.linspace(0, 10000, 9), np.linspace(0, 8000, 7))
)


def test_rpc_image_to_world_solves_the_rpc_polynomials() -> None:
    model = RpcSensorModel(RPCS)
    lons, lats = model.image_to_world(GRID_COLS, GRID_ROWS)
    back = rpc_forward(RPCS, lons, lats, np.full(lons.size, RPCS.height_off))
    assert np.abs(back[:, 0] - GRID_COLS).max() < 1e-4
    assert np.abs(back[:, 1] - GRID_ROWS).max() < 1e-4


def test_rpc_vectorised_equals_rasterio_per_point() -> None:
    lons, lats = RpcSensorModel(RPCS).image_to_world(GRID_COLS, GRID_ROWS)
    for col, row, lon, lat in zip(GRID_COLS, GRID_ROWS, lons, lats, strict=True):
        x, y = rasterio.transform.xy(
            RPCS, row, col, zs=RPCS.height_off, offset="ul", RPC_PIXEL_ERROR_THRESHOLD=1e-6
        )
        assert abs(x - lon) < 1e-7
        assert abs(y - lat) < 1e-7


def test_rpc_world_to_image_inverts_image_to_world() -> None:
    model = RpcSensorModel(RPCS)
    lons, lats = model.image_to_world(GRID_COLS, GRID_ROWS)
    cols, rows = model.world_to_image(lons, lats)
    assert np.abs(cols - GRID_COLS).max() < 1e-4
    assert np.abs(rows - GRID_ROWS).max() < 1e-4


def test_rpc_image_is_described_with_its_rpcs(tmp_path: Path) -> None:
    path = tmp_path / "rpc.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=64, height=48, count=1, dtype="uint8", rpcs=RPCS
    ) as dst:
        dst.write(np.zeros((1, 48, 64), np.uint8))
    info = describe_image(str(path))
    assert info.transform is None
    model = info.sensor_model()
    assert isinstance(model, RpcSensorModel)
    cols, rows = np.array([0.0, 64.0]), np.array([0.0, 48.0])
    got = np.stack(model.image_to_world(cols, rows))
    expected = np.stack(RpcSensorModel(RPCS).image_to_world(cols, rows))
    assert np.abs(got - expected).max() < 1e-9  # the coefficients survived the file


def test_rpc_with_a_dem_puts_points_at_the_dem_height(tmp_path: Path) -> None:
    dem = tmp_path / "dem.tif"
    transform = Affine(0.001, 0.0, -77.2, 0.0, -0.001, 39.0)  # covers the RPC footprint
    with rasterio.open(
        dem, "w", driver="GTiff", width=400, height=300, count=1, dtype="float32",
        crs="EPSG:4326", transform=transform,
    ) as dst:  # fmt: skip
        dst.write(np.full((1, 300, 400), 620.0, np.float32))
    lons, lats = RpcSensorModel(RPCS, str(dem)).image_to_world(GRID_COLS, GRID_ROWS)
    back = rpc_forward(RPCS, lons, lats, np.full(lons.size, 620.0))
    assert np.abs(back[:, 0] - GRID_COLS).max() < 1e-3
    assert np.abs(back[:, 1] - GRID_ROWS).max() < 1e-3
    # ... and not where the flat model puts them: the height matters here.
    flat_lons, flat_lats = RpcSensorModel(RPCS).image_to_world(GRID_COLS, GRID_ROWS)
    assert np.abs(flat_lons - lons).max() > 1e-5
    # The elevation written out is the height each model placed the points at.
    np.testing.assert_allclose(RpcSensorModel(RPCS, str(dem)).heights(lons, lats), 620.0)
    np.testing.assert_array_equal(
        RpcSensorModel(RPCS).heights(flat_lons, flat_lats), RPCS.height_off
    )
    outside = np.array([10.0]), np.array([10.0])  # off the DEM: the RPC height offset
    assert RpcSensorModel(RPCS, str(dem)).heights(*outside)[0] == RPCS.height_off
    assert AffineSensorModel(AFFINE, UTM, str(dem)).heights(lons, lats) == pytest.approx(620.0)
    assert not AffineSensorModel(AFFINE, UTM).heights(lons, lats).any()


UTM = CRS.from_epsg(32618)
AFFINE = Affine(0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0)


def utm(cols: FloatArray, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
    a, b, c, d, e, f = AFFINE[:6]
    return a * cols + b * rows + c, d * cols + e * rows + f


def test_gcp_model_matches_pyproj() -> None:
    corners = [(0, 0), (2000, 0), (2000, 1500), (0, 1500), (1000, 700)]
    xs, ys = utm(np.array([c for c, _ in corners], float), np.array([r for _, r in corners], float))
    gcps = [
        GroundControlPoint(row=r, col=c, x=float(x), y=float(y), z=100.0 + 10 * i)
        for i, ((c, r), x, y) in enumerate(zip(corners, xs, ys, strict=True))
    ]
    model = GcpSensorModel(gcps, UTM)
    assert model.heights(np.zeros(2), np.zeros(2)).tolist() == [120.0, 120.0]  # their mean
    cols, rows = np.array([10.0, 1234.5, 1999.0]), np.array([20.0, 777.25, 1499.0])
    lons, lats = model.image_to_world(cols, rows)
    xs, ys = utm(cols, rows)
    ref_lons, ref_lats = Transformer.from_crs(UTM, 4326, always_xy=True).transform(xs, ys)
    assert np.abs(lons - ref_lons).max() < 1e-7
    assert np.abs(lats - ref_lats).max() < 1e-7
    back_cols, back_rows = model.world_to_image(lons, lats)
    assert np.abs(back_cols - cols).max() < 1e-6
    assert np.abs(back_rows - rows).max() < 1e-6


@pytest.mark.parametrize("size", [0])
def test_empty_inputs(size: int) -> None:
    empty = np.zeros(size)
    assert RpcSensorModel(RPCS).image_to_world(empty, empty)[0].size == 0
    assert GcpSensorModel([], UTM).world_to_image(empty, empty)[0].size == 0


def test_nitf_rpc00b_tre_gives_the_same_model(tmp_path: Path) -> None:
    tif, ntf = tmp_path / "rpc.tif", tmp_path / "rpc.ntf"
    with rasterio.open(
        tif, "w", driver="GTiff", width=64, height=48, count=1, dtype="uint8", rpcs=RPCS
    ) as dst:
        dst.write(np.zeros((1, 48, 64), np.uint8))
    copy(str(tif), str(ntf), driver="NITF")  # GDAL writes the RPCs as an RPC00B TRE
    with rasterio.open(ntf) as src:
        assert "RPC00B" in src.tags(ns="TRE")
    model = describe_image(str(ntf)).sensor_model()
    assert isinstance(model, RpcSensorModel)
    got = np.stack(model.image_to_world(GRID_COLS, GRID_ROWS))
    expected = np.stack(RpcSensorModel(RPCS).image_to_world(GRID_COLS, GRID_ROWS))
    assert np.abs(got - expected).max() < 1e-7
