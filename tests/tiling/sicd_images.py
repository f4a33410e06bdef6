"""A small synthetic SICD NITF written with sarpy, and sarpy as the reference to read it.

The SICD is an RMA/INCA stripmap collection from a straight, level flight path. The SICD tests
(test_sicd_*.py) compare ModelRunner with sarpy: its reader for the pixels, its per-point
projection for the geolocation, and its reader again to check that a NITF tile is a SICD of the
chip.
"""

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sarpy.geometry.geocoords import geodetic_to_ecf, wgs_84_norm
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

from tiling.image import ImageInfo
from tiling.sicd import SicdSensorModel

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


def model_of(info: ImageInfo, dem: str | None = None) -> SicdSensorModel:
    model = info.sensor_model(dem)
    assert isinstance(model, SicdSensorModel)
    return model


RNG = np.random.default_rng(11)
COLS_IN = np.concatenate([[0.0, COLS, 0.5, COLS / 2 + 0.5], RNG.uniform(0, COLS, 40)])
ROWS_IN = np.concatenate([[0.0, ROWS, 0.5, ROWS / 2 + 0.5], RNG.uniform(0, ROWS, 40)])
