"""SICD NITF input: detection, pixels, the SICD sensor model and SICD chips as tiles.

A small SICD (an RMA/INCA stripmap collection from a straight, level flight path) is written
with sarpy. sarpy is also the reference: its reader for the pixels, its per-point projection
for the geolocation, and its reader again to check that a NITF tile is a SICD of the chip.
"""

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import rasterio
import shapely
from affine import Affine
from sarpy.geometry import point_projection
from sarpy.geometry.geocoords import ecf_to_geodetic, geodetic_to_ecf, wgs_84_norm
from sarpy.io.complex.sicd import SICDReader, SICDWriter, SICDWritingDetails
from sarpy.io.complex.sicd_elements.blocks import XYZPolyType
from sarpy.io.complex.sicd_elements.CollectionInfo import CollectionInfoType, RadarModeType
from sarpy.io.complex.sicd_elements.GeoData import GeoDataType, SCPType
from sarpy.io.complex.sicd_elements.Grid import DirParamType, GridType
from sarpy.io.complex.sicd_elements.ImageData import ImageDataType
from sarpy.io.complex.sicd_elements.ImageFormation import ImageFormationType, RcvChanProcType
from sarpy.io.complex.sicd_elements.Position import PositionType
from sarpy.io.complex.sicd_elements.RadarCollection import ChanParametersType, RadarCollectionType
from sarpy.io.complex.sicd_elements.RMA import INCAType, RMAType
from sarpy.io.complex.sicd_elements.SICD import SICDType
from sarpy.io.complex.sicd_elements.Timeline import IPPSetType, TimelineType

from infra.local_stack import SAMPLE_IMAGE
from tiling.dem import DemHeights
from tiling.encode import decode_tile, encode_tile, resolve_encoding
from tiling.errors import ImageOpenError, UnsupportedEncodingError
from tiling.grid import Window
from tiling.image import ImageInfo, WindowReader, describe_image
from tiling.nitf_des import SICD_DES_NAMES, backslash_quote, find_xml_des
from tiling.roi import region_in_pixels
from tiling.sicd import SicdSensorModel, igeolo

FloatArray = npt.NDArray[np.float64]

ROWS, COLS = 200, 300
SCP_LLH = (38.9, -77.0, 100.0)
LIGHT = 299792458.0


def synthetic_sicd(pixel_type: str = "RE32F_IM32F") -> Any:
    """A self-consistent SICD: a sensor flying north at 7.5 km/s, 500 km up, 300 km west of
    the scene, looking right; zero-Doppler (INCA) grid of 0.5 m range by 1 m azimuth."""
    scp = geodetic_to_ecf(np.array(SCP_LLH))
    up = wgs_84_norm(scp)
    north = np.array([0.0, 0.0, 1.0]) - up * up[2]
    north /= np.linalg.norm(north)
    east = np.cross(north, up)
    speed, t_ca = 7500.0, 5.0
    velocity = north * speed
    closest = scp + up * 500e3 - east * 300e3  # where the sensor is closest to the SCP
    start = closest - velocity * t_ca
    row_ss, col_ss, fc, bw = 0.5, 1.0, 9.6e9, 200e6
    sicd = SICDType(
        CollectionInfo=CollectionInfoType(
            CollectorName="SYNTHETIC", CoreName="SYNTHETIC1", CollectType="MONOSTATIC",
            RadarMode=RadarModeType(ModeType="STRIPMAP"), Classification="UNCLASSIFIED",
        ),
        ImageData=ImageDataType(
            PixelType=pixel_type, NumRows=ROWS, NumCols=COLS, FirstRow=0, FirstCol=0,
            FullImage=(ROWS, COLS), SCPPixel=(ROWS // 2, COLS // 2),
        ),
        GeoData=GeoDataType(SCP=SCPType(LLH=SCP_LLH)),
        Position=PositionType(ARPPoly=XYZPolyType(
            X=[start[0], velocity[0]], Y=[start[1], velocity[1]], Z=[start[2], velocity[2]]
        )),
        Grid=GridType(
            ImagePlane="SLANT", Type="RGZERO", TimeCOAPoly=[[t_ca, col_ss / speed]],
            Row=DirParamType(
                SS=row_ss, Sgn=-1, ImpRespBW=2 * bw / LIGHT, ImpRespWid=0.9, KCtr=2 * fc / LIGHT,
                DeltaK1=-bw / LIGHT, DeltaK2=bw / LIGHT, DeltaKCOAPoly=[[0.0]],
            ),
            Col=DirParamType(
                SS=col_ss, Sgn=-1, ImpRespBW=0.8, ImpRespWid=1.1, KCtr=0.0, DeltaK1=-0.4,
                DeltaK2=0.4, DeltaKCOAPoly=[[0.0]],
            ),
        ),
        RadarCollection=RadarCollectionType(
            TxPolarization="V", TxFrequency=(fc - bw / 2, fc + bw / 2),
            RcvChannels=[ChanParametersType(TxRcvPolarization="V:V")],
        ),
        Timeline=TimelineType(
            CollectStart=np.datetime64("2024-01-01T00:00:00"), CollectDuration=10.0,
            IPP=[IPPSetType(TStart=0, TEnd=10, IPPStart=0, IPPEnd=9999, IPPPoly=(0, 1000))],
        ),
        ImageFormation=ImageFormationType(
            RcvChanProc=RcvChanProcType(NumChanProc=1, PRFScaleFactor=1, ChanIndices=[1]),
            ImageFormAlgo="RMA", TStartProc=0, TEndProc=10, TxRcvPolarizationProc="V:V",
            TxFrequencyProc=(fc - bw / 2, fc + bw / 2), STBeamComp="NO", ImageBeamComp="NO",
            AzAutofocus="NO", RgAutofocus="NO",
        ),
        RMA=RMAType(RMAlgoType="RG_DOP", ImageType="INCA", INCA=INCAType(
            R_CA_SCP=float(np.linalg.norm(closest - scp)), FreqZero=fc,
            TimeCAPoly=[t_ca, col_ss / speed], DRateSFPoly=[[1.0]], DopCentroidPoly=[[0.0]],
            DopCentroidCOA=True,
        )),
    )  # fmt: skip
    sicd.derive()
    return sicd


def write_sicd(path: Path, pixel_type: str = "RE32F_IM32F", row_limit: int | None = None) -> Path:
    """Write the synthetic SICD with random complex pixels (whole numbers: int16-safe)."""
    rng = np.random.default_rng(3)
    data = rng.integers(-900, 900, (ROWS, COLS)) + 1j * rng.integers(-900, 900, (ROWS, COLS))
    details = SICDWritingDetails(synthetic_sicd(pixel_type), row_limit=row_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sarpy points to sarkit
        with SICDWriter(str(path), sicd_writing_details=details, check_existence=False) as w:
            w.write_chip(data.astype(np.complex64), start_indices=(0, 0))
    return path


def sarpy_reader(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return SICDReader(str(path))


@pytest.fixture(scope="module")
def sicd_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sicd(tmp_path_factory.mktemp("sicd") / "image.nitf")


@pytest.fixture(scope="module")
def info(sicd_path: Path) -> ImageInfo:
    return describe_image(str(sicd_path))


@pytest.fixture(scope="module")
def reference(sicd_path: Path) -> Iterator[Any]:
    reader = sarpy_reader(sicd_path)
    yield reader
    reader.close()


def model_of(info: ImageInfo, dem: str | None = None) -> SicdSensorModel:
    model = info.sensor_model(dem)
    assert isinstance(model, SicdSensorModel)
    return model


RNG = np.random.default_rng(11)
COLS_IN = np.concatenate([[0.0, COLS, 0.5, COLS / 2 + 0.5], RNG.uniform(0, COLS, 40)])
ROWS_IN = np.concatenate([[0.0, ROWS, 0.5, ROWS / 2 + 0.5], RNG.uniform(0, ROWS, 40)])


# --- detection and pixels -------------------------------------------------------------------


def test_sicd_nitf_is_described_as_sicd(info: ImageInfo) -> None:
    assert info.sicd is not None
    assert info.sicd.name == "XML_DATA_CONTENT"
    assert (info.width, info.height, info.band_count, info.dtype) == (COLS, ROWS, 2, "float32")
    # GDAL's IGEOLO corner GCPs are not used: the SICD is the georeferencing.
    assert info.transform is None
    assert info.gcps is None


def test_other_nitf_is_not_sicd() -> None:
    assert describe_image(str(SAMPLE_IMAGE)).sicd is None


@pytest.mark.parametrize(
    ("pixel_type", "dtype"), [("RE32F_IM32F", "float32"), ("RE16I_IM16I", "int16")]
)
def test_pixels_are_i_and_q_bands_as_sarpy_reads_them(
    tmp_path: Path, pixel_type: str, dtype: str
) -> None:
    path = write_sicd(tmp_path / "image.nitf", pixel_type)
    info = describe_image(str(path))
    assert (info.band_count, info.dtype) == (2, dtype)
    window = Window(37, 21, 90, 64)
    with WindowReader(str(path)) as reader:
        pixels = reader.read(window)
    sarpy = sarpy_reader(path)
    expected = sarpy[window.row_off : window.row_end, window.col_off : window.col_end]
    sarpy.close()
    np.testing.assert_array_equal(pixels[0], expected.real)
    np.testing.assert_array_equal(pixels[1], expected.imag)


def test_sicd_in_several_image_segments_is_read_as_one(tmp_path: Path, reference: Any) -> None:
    path = write_sicd(tmp_path / "segments.nitf", row_limit=70)  # segments of 70, 70, 60 rows
    with rasterio.open(path) as src:
        assert len(src.subdatasets) == 3
        assert src.height == 70
    info = describe_image(str(path))
    assert (info.width, info.height) == (COLS, ROWS)
    window = Window(10, 50, 40, 120)  # across both segment boundaries
    with WindowReader(str(path)) as reader:
        pixels = reader.read(window)
    expected = reference[50:170, 10:50]
    np.testing.assert_array_equal(pixels[0] + 1j * pixels[1], expected)


@pytest.mark.parametrize(("fmt", "compression"), [("PNG", "NONE"), ("JPEG", "NONE")])
def test_png_and_jpeg_refuse_sicd_pixels(info: ImageInfo, fmt: str, compression: str) -> None:
    with pytest.raises(
        UnsupportedEncodingError, match=rf"float32 pixels cannot be encoded as {fmt}"
    ):
        resolve_encoding(info.dtype, fmt, compression)


def test_j2k_falls_back_to_uncompressed_nitf_for_float_iq(info: ImageInfo) -> None:
    assert resolve_encoding(info.dtype, "NITF", "J2K") == ("NITF", "NONE")


# --- the sensor model -----------------------------------------------------------------------


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


# --- tiles ----------------------------------------------------------------------------------


def test_nitf_tile_is_a_sicd_of_the_chip(tmp_path: Path, info: ImageInfo) -> None:
    window = Window(20, 10, 64, 32)
    with WindowReader(info.url) as reader:
        pixels = reader.read(window)
    tile = tmp_path / "tile.nitf"
    tile.write_bytes(encode_tile(pixels, "NITF", "NONE", info.tile_georef(window)))

    chip = sarpy_reader(tile)  # sarpy's SICD reader accepts it
    structure = chip.get_sicds_as_tuple()[0]
    image_data = structure.ImageData
    assert (image_data.FirstRow, image_data.FirstCol) == (10, 20)
    assert (image_data.NumRows, image_data.NumCols) == (32, 64)
    assert (image_data.FullImage.NumRows, image_data.FullImage.NumCols) == (ROWS, COLS)
    np.testing.assert_array_equal(chip[:, :], pixels[0] + 1j * pixels[1])
    chip.close()

    tile_info = describe_image(str(tile))
    assert tile_info.sicd is not None
    assert (tile_info.tags["NITF_ICAT"], tile_info.tags["NITF_IREP"]) == ("SAR", "NODISPLY")
    with rasterio.open(tile) as src:
        assert [src.tags(b)["NITF_ISUBCAT"] for b in (1, 2)] == ["I", "Q"]
    # The chip's model is the image's, moved by the window's corner.
    cols, rows = np.array([0.5, 63.5, 10.25]), np.array([0.5, 31.5, 7.75])
    got = np.stack(model_of(tile_info).image_to_world(cols, rows))
    full = np.stack(model_of(info).image_to_world(cols + 20, rows + 10))
    assert np.abs(got - full).max() < 1e-9
    # Corners: IGEOLO and the DES polygon are the chip's corner pixel centres.
    corners = np.stack(
        model_of(info).image_to_world(
            np.array([20.5, 83.5, 83.5, 20.5]), np.array([10.5, 10.5, 41.5, 41.5])
        )
    )
    assert tile_info.tags["NITF_IGEOLO"] == igeolo(corners[::-1].T)
    polygon = tile_info.sicd.user_header[283:408]
    lat_lon = [
        (float(polygon[i : i + 12]), float(polygon[i + 12 : i + 25])) for i in range(0, 125, 25)
    ]
    assert np.abs(np.array(lat_lon[:4]) - corners[::-1].T).max() < 1e-8
    assert lat_lon[4] == lat_lon[0]
    icps = structure.GeoData.ImageCorners.get_array(dtype=np.float64)
    assert np.abs(icps - corners[::-1].T).max() < 1e-9


def test_gtiff_tile_keeps_the_i_and_q_bands(info: ImageInfo) -> None:
    window = Window(0, 0, 48, 40)
    with WindowReader(info.url) as reader:
        pixels = reader.read(window)
    decoded = decode_tile(encode_tile(pixels, "GTIFF", "LZW", info.tile_georef(window)))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, pixels)


def test_j2k_nitf_tile_of_int16_sicd_carries_the_chip_xml(tmp_path: Path) -> None:
    path = write_sicd(tmp_path / "int16.nitf", "RE16I_IM16I")
    info = describe_image(str(path))
    window = Window(100, 50, 32, 32)
    with WindowReader(str(path)) as reader:
        pixels = reader.read(window)
    tile = tmp_path / "tile.nitf"
    tile.write_bytes(encode_tile(pixels, "NITF", "J2K", info.tile_georef(window)))
    tile_info = describe_image(str(tile))
    assert tile_info.tags["NITF_IC"] == "C8"
    assert tile_info.sicd is not None
    assert "<FirstRow>50</FirstRow>" in tile_info.sicd.xml
    assert "<FirstCol>100</FirstCol>" in tile_info.sicd.xml


def test_sicd_that_does_not_match_its_pixels_is_refused(tmp_path: Path, info: ImageInfo) -> None:
    georef = info.tile_georef(Window(0, 0, 64, 32))  # SICD XML of a 32 x 64 chip ...
    tile = tmp_path / "wrong.nitf"
    tile.write_bytes(encode_tile(np.zeros((2, 30, 64), np.float32), "NITF", "NONE", georef))
    with pytest.raises(ImageOpenError, match=r"describes 32x64 pixels .* hold 30x64"):
        describe_image(str(tile))  # ... on 30 x 64 pixels


# --- DES parsing ----------------------------------------------------------------------------


def test_backslash_quote() -> None:
    assert backslash_quote('a\\b"c\nd\0') == 'a\\\\b\\"c\\nd\\0'


def test_des_data_given_as_base64_is_read() -> None:
    listing = (
        '<des_list><des name="XML_DATA_CONTENT"><field name="DESVER" value="01"/>'
        '<field name="DESSHL" value="0005"/><field name="DESSHF" value="99999"/>'
        '<field name="DESDATA" value="PFNJQ0QgeG1sbnM9InVybjpTSUNEOjEuMy4wIj48QS8+PC9TSUNEPg=="/>'
        "</des></des_list>"
    )  # base64 of <SICD xmlns="urn:SICD:1.3.0"><A/></SICD>
    des = find_xml_des(listing, SICD_DES_NAMES, "SICD")
    assert des is not None
    assert des.xml == '<SICD xmlns="urn:SICD:1.3.0"><A/></SICD>'
    assert des.user_header == "99999"
    assert find_xml_des(listing, SICD_DES_NAMES, "SIDD") is None
