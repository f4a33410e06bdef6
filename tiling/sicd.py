"""SICD (complex SAR) images: the SICD sensor model and the metadata of a SICD chip.

A SICD NITF holds its metadata as SICD XML in a data extension segment; sarpy's projections
(the SICD Image Projections document) map pixels to the ground and back from it.

Pixel coordinates here follow the project (x right, y down, origin at the top-left corner of
the first pixel); SICD addresses pixel centres, so SICD (row, col) = (y - 0.5, x - 0.5). Both
are relative to the pixels in the file (SICD ``FirstRow``/``FirstCol`` are taken care of).
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import numpy.typing as npt
from sarpy.geometry import point_projection
from sarpy.geometry.geocoords import ecf_to_geodetic, geodetic_to_ecf, wgs_84_norm
from sarpy.io.complex.sicd_elements.SICD import SICDType

from tiling.dem import DemHeights
from tiling.errors import ImageOpenError
from tiling.grid import Window
from tiling.nitf_des import XmlDes, xml_text

FloatArray = npt.NDArray[np.float64]

# Scene -> image: iterate until the ground-plane residual is below this (m); sarpy's default
# is 1 cm, i.e. ~0.02 px at typical sample spacings.
GROUND_TO_IMAGE_TOLERANCE_M = 1e-4
# Image -> DEM: iterate until the point is this close (m) to the DEM height below it.
DEM_HEIGHT_TOLERANCE_M = 1e-3
DEM_MAX_ITERATIONS = 20

# Band subcategories (ISUBCAT) of the pixel types: I/Q samples, or amplitude/phase indices.
_ISUBCAT = {"RE32F_IM32F": "I,Q", "RE16I_IM16I": "I,Q", "AMP8I_PHS8I": "M,P"}


@functools.lru_cache(maxsize=8)
def sicd_structure(xml: str) -> Any:
    """The parsed SICD, with its derived fields and projection set up (shared, read-only).

    Raises:
        ImageOpenError: If the XML is not a SICD that can be projected.
    """
    try:
        structure = SICDType.from_xml_string(xml)
        structure.derive()  # as sarpy's reader does: fills fields the file may leave out
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, ET.ParseError) as err:
        # What sarpy's parser raises on malformed or incomplete XML.
        raise ImageOpenError(f"SICD metadata cannot be read: {err}") from err
    if not structure.can_project_coordinates():
        raise ImageOpenError("SICD metadata lacks what its sensor model needs (see the log)")
    structure.define_coa_projection()
    return structure


def check_sicd(xml: str, url: str, shape: tuple[int, int]) -> None:
    """Check that a SICD can be projected and describes pixels of ``shape`` (rows, cols).

    Raises:
        ImageOpenError: Naming the image and what is wrong.
    """
    try:
        data = sicd_structure(xml).ImageData
    except ImageOpenError as err:
        raise ImageOpenError(f"cannot use image {url}: {err}") from err
    described = (int(data.NumRows), int(data.NumCols))
    if described != shape:
        raise ImageOpenError(
            f"cannot use image {url}: its SICD describes {described[0]}x{described[1]} pixels "
            f"(rows x columns), its image segments hold {shape[0]}x{shape[1]}"
        )


def _floats(values: Any) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


class SicdSensorModel:
    """Pixel <-> ground through a SICD's projection, vectorised.

    Without a DEM, points lie at the height (above the WGS84 ellipsoid) of the scene centre
    point (SCP), as sarpy's default image-to-ground projection puts them; with one, on the DEM.
    """

    def __init__(self, xml: str, dem: str | None = None) -> None:
        """Build the model from SICD XML and an optional DEM path.

        Raises:
            ImageOpenError: If the XML is not a SICD that can be projected.
        """
        self.structure = sicd_structure(xml)
        self.scp_hae = float(self.structure.GeoData.SCP.LLH.HAE)
        self._dem = DemHeights(dem) if dem else None

    def image_to_world(self, cols: FloatArray, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Pixel coordinates to lon/lat degrees."""
        if cols.size == 0:
            return _floats(cols), _floats(rows)
        points = np.column_stack((_floats(rows) - 0.5, _floats(cols) - 0.5))
        ecf = _floats(point_projection.image_to_ground(points, self.structure))
        if self._dem is not None:
            ecf = self._onto_dem(points, ecf, self._dem)
        llh = _floats(ecf_to_geodetic(ecf))
        return llh[:, 1].copy(), llh[:, 0].copy()

    def heights(self, lons: FloatArray, lats: FloatArray) -> FloatArray:
        """The DEM's heights, else the SCP's height (where the projection put the points)."""
        if self._dem is None or lons.size == 0:
            return np.full(np.shape(lons), self.scp_hae)
        return self._dem.heights_or(_floats(lons), _floats(lats), self.scp_hae)

    def world_to_image(self, lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Lon/lat degrees to pixel coordinates (on the DEM, else at the SCP height)."""
        if lons.size == 0:
            return _floats(lons), _floats(lats)
        heights = np.full(lons.shape, self.scp_hae)
        if self._dem is not None:
            sampled = self._dem(_floats(lons), _floats(lats))
            heights = np.where(np.isnan(sampled), heights, sampled)
        ecf = geodetic_to_ecf(np.column_stack((_floats(lats), _floats(lons), heights)))
        image, _, _ = point_projection.ground_to_image(
            ecf, self.structure, tolerance=GROUND_TO_IMAGE_TOLERANCE_M
        )
        image = _floats(image).reshape(-1, 2)
        return image[:, 1] + 0.5, image[:, 0] + 0.5

    def _onto_dem(self, points: FloatArray, ecf: FloatArray, dem: DemHeights) -> FloatArray:
        """Slide each point along its range/range-rate contour onto the DEM.

        Each step intersects the contour with the plane tangent to the ellipsoid through the
        point moved to the DEM height below it; where the DEM has no value, the SCP height is
        the target (where the points already are). Where the terrain is steeper than the
        incidence allows (layover), the iteration does not settle; the last step is returned.
        """
        r, r_dot, _, arp, varp = self.structure.coa_projection.projection(points)
        with dem.opened() as heights:
            for _ in range(DEM_MAX_ITERATIONS):
                llh = _floats(ecf_to_geodetic(ecf))
                target = heights(llh[:, 1], llh[:, 0])
                target = np.where(np.isnan(target), self.scp_hae, target)
                error = llh[:, 2] - target
                if not (np.abs(error[np.isfinite(error)]) > DEM_HEIGHT_TOLERANCE_M).any():
                    break
                normal = _floats(wgs_84_norm(ecf))
                ecf = _contour_on_plane(
                    _floats(r), _floats(r_dot), _floats(arp), _floats(varp),
                    ecf - error[:, np.newaxis] * normal, normal, ecf,
                )  # fmt: skip
        return ecf


def _dot(a: FloatArray, b: FloatArray) -> FloatArray:
    return _floats(np.einsum("ij,ij->i", a, b))


def _contour_on_plane(
    r: FloatArray,
    r_dot: FloatArray,
    arp: FloatArray,
    varp: FloatArray,
    origin: FloatArray,
    normal: FloatArray,
    near: FloatArray,
) -> FloatArray:
    """Where each range/range-rate contour meets its plane, on the side of ``near``.

    A ground point X seen from the aperture position A (velocity V) at range r and range rate
    r_dot satisfies |X - A| = r and (X - A).V = -r r_dot. In the plane (origin, unit normal n),
    A sits at height z above its foot; X lies on the circle of radius sqrt(r^2 - z^2) around
    it, at the angle whose cosine the range rate fixes. NaN where the contour misses the plane.
    """
    z = _dot(arp - origin, normal)
    foot = arp - z[:, np.newaxis] * normal
    with np.errstate(invalid="ignore"):
        radius = np.sqrt(r * r - z * z)
        v_normal = _dot(varp, normal)
        along = varp - v_normal[:, np.newaxis] * normal
        v_along = np.linalg.norm(along, axis=1)
        u_along = along / v_along[:, np.newaxis]
        u_across = np.cross(normal, u_along)
        cos_angle = (z * v_normal - r * r_dot) / (radius * v_along)
        side = np.sign(_dot(near - foot, u_across))
        sin_angle = side * np.sqrt(1.0 - cos_angle * cos_angle)
    point: FloatArray = (
        foot
        + (radius * cos_angle)[:, np.newaxis] * u_along
        + (radius * sin_angle)[:, np.newaxis] * u_across
    )
    return point


def _corners(model: SicdSensorModel, window: Window) -> FloatArray:
    """(lat, lon) of the centres of a window's corner pixels: first row first column, first
    row last column, last row last column, last row first column (SICD and IGEOLO order)."""
    cols = np.array([window.col_off, window.col_end - 1, window.col_end - 1, window.col_off]) + 0.5
    rows = np.array([window.row_off, window.row_off, window.row_end - 1, window.row_end - 1]) + 0.5
    lons, lats = model.image_to_world(cols.astype(np.float64), rows.astype(np.float64))
    return np.column_stack((lats, lons))


def _dms(value: float, degree_digits: int, hemispheres: str) -> str:
    seconds = round(abs(value) * 3600)
    degrees, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    hemisphere = hemispheres[0] if value >= 0 else hemispheres[1]
    return f"{degrees:0{degree_digits}d}{minutes:02d}{seconds:02d}{hemisphere}"


def igeolo(corners: FloatArray) -> str:
    """NITF IGEOLO (ICORDS G: ddmmssXdddmmssY four times) of (lat, lon) corners."""
    return "".join(_dms(lat, 2, "NS") + _dms(lon, 3, "EW") for lat, lon in corners)


def _polygon(corners: FloatArray) -> str:
    """DESSHLPG: the corners and the first again, as +dd.dddddddd+ddd.dddddddd."""
    points = [f"{lat:+012.8f}{lon:+013.8f}" for lat, lon in corners]
    return "".join([*points, points[0]])


def _set_text(parent: ET.Element | None, name: str, value: str) -> None:
    if parent is None:
        return
    for child in parent:
        if child.tag.rsplit("}", 1)[-1] == name:
            child.text = value
            return


def _children(parent: ET.Element | None, name: str) -> list[ET.Element]:
    if parent is None:
        return []
    return [child for child in parent if child.tag.rsplit("}", 1)[-1] == name]


def chip_xml(xml: str, window: Window, corners: FloatArray) -> str:
    """The SICD XML of a chip: ``ImageData`` first row/column and size, and image corners.

    Everything else is kept as it is: the projection parameters stay valid for a chip because
    SICD pixel coordinates are offset by ``FirstRow``/``FirstCol``.
    """
    root = ET.fromstring(xml)
    image_data = next(iter(_children(root, "ImageData")), None)
    first_row = first_col = 0
    for element in _children(image_data, "FirstRow"):
        first_row = int((element.text or "0").strip())
    for element in _children(image_data, "FirstCol"):
        first_col = int((element.text or "0").strip())
    _set_text(image_data, "NumRows", str(window.height))
    _set_text(image_data, "NumCols", str(window.width))
    _set_text(image_data, "FirstRow", str(first_row + window.row_off))
    _set_text(image_data, "FirstCol", str(first_col + window.col_off))
    geo_data = next(iter(_children(root, "GeoData")), None)
    image_corners = next(iter(_children(geo_data, "ImageCorners")), None)
    for icp, (lat, lon) in zip(_children(image_corners, "ICP"), corners, strict=False):
        _set_text(icp, "Lat", repr(float(lat)))
        _set_text(icp, "Lon", repr(float(lon)))
    return xml_text(root)


def chip_nitf_options(des: XmlDes, window: Window) -> dict[str, str]:
    """NITF creation options making a tile of a SICD a SICD of the chip.

    The image subheader says SAR with I/Q (or amplitude/phase) bands and carries the chip's
    corners (IGEOLO); the SICD DES carries the XML updated for the chip and its corners.

    Raises:
        ImageOpenError: If the XML is not a SICD that can be projected.
    """
    model = SicdSensorModel(des.xml)
    corners = _corners(model, window)
    options = {
        "IID1": "SICD000",
        "ICAT": "SAR",
        "IREP": "NODISPLY",
        "ICORDS": "G",
        "IGEOLO": igeolo(corners),
        "DES": des.creation_option(chip_xml(des.xml, window, corners), _polygon(corners)),
    }
    isubcat = _ISUBCAT.get(str(model.structure.ImageData.PixelType))
    if isubcat is not None:
        options["ISUBCAT"] = isubcat
    return options
