"""Sensor models: image pixel coordinates to WGS84 longitude/latitude, vectorised.

The best model an image has is used: a SICD's own sensor model (:mod:`tiling.sicd`), else its
affine transform (any CRS), else its rational polynomial coefficients (RPC00B, with an optional
DEM), else its ground control points. Every model maps whole arrays of coordinates at once (one
call per tile, not per vertex).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.rpc import RPC
from rasterio.transform import GCPTransformer, RPCTransformer
from rasterio.warp import transform as warp_transform

from tiling.dem import DemHeights

WGS84 = CRS.from_epsg(4326)
# GDAL's pixel -> ground RPC solution iterates until within this many pixels (default 0.1).
RPC_PIXEL_ERROR = 1e-6

FloatArray = npt.NDArray[np.float64]


class SensorModel(Protocol):
    """Maps between image pixels (x right, y down, origin top-left) and lon/lat degrees."""

    def image_to_world(self, cols: FloatArray, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Pixel coordinates to longitude/latitude degrees."""
        ...

    def world_to_image(self, lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Longitude/latitude degrees to pixel coordinates."""
        ...

    def heights(self, lons: FloatArray, lats: FloatArray) -> FloatArray:
        """Heights (metres) of the ground points :meth:`image_to_world` gave at ``lons/lats``."""
        ...


def _dem_or(
    dem: DemHeights | None, lons: FloatArray, lats: FloatArray, default: float
) -> FloatArray:
    """Heights from the DEM where it has them, else ``default``."""
    if dem is None or lons.size == 0:
        return np.full(lons.shape, default)
    return dem.heights_or(lons, lats, default)


def _floats(values: Any) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def _identity(values: Any) -> Any:
    return values


class AffineSensorModel:
    """Pixel -> world through the image's affine transform and CRS, reprojected to WGS84."""

    def __init__(self, transform: Affine, crs: CRS, dem: str | None = None) -> None:
        """Build the model from a dataset's transform and CRS; heights from ``dem`` (else 0)."""
        self.transform = transform
        self.crs = crs
        self._is_wgs84 = crs == WGS84
        self._dem = DemHeights(dem) if dem else None

    def heights(self, lons: FloatArray, lats: FloatArray) -> FloatArray:
        """The DEM's heights, 0 without one (an orthoimage says nothing of heights)."""
        return _dem_or(self._dem, lons, lats, 0.0)

    def image_to_world(self, cols: FloatArray, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Map pixel coordinates (x right, y down, origin top-left corner) to lon/lat degrees."""
        a, b, c, d, e, f = self.transform[:6]
        xs = a * cols + b * rows + c
        ys = d * cols + e * rows + f
        if self._is_wgs84 or xs.size == 0:
            return xs, ys
        lons, lats = warp_transform(self.crs, WGS84, xs, ys)
        return np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)

    def world_to_image(self, lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Map lon/lat degrees to pixel coordinates (the inverse of :meth:`image_to_world`)."""
        xs, ys = lons, lats
        if not self._is_wgs84 and lons.size:
            projected = warp_transform(WGS84, self.crs, lons, lats)
            xs = np.asarray(projected[0], dtype=np.float64)
            ys = np.asarray(projected[1], dtype=np.float64)
        a, b, c, d, e, f = (~self.transform)[:6]
        return a * xs + b * ys + c, d * xs + e * ys + f


class RpcSensorModel:
    """Pixel <-> ground through RPC00B coefficients (GDAL's RPC transformer).

    Without a DEM, points are placed at the RPC height offset (the scene's mean height); with
    one (any GDAL-readable raster, e.g. on /vsis3), at the DEM's height.
    """

    def __init__(self, rpcs: RPC, dem: str | None = None) -> None:
        """Build the model from an image's RPCs and an optional DEM path."""
        self.rpcs = rpcs
        self._options: dict[str, Any] = {"RPC_PIXEL_ERROR_THRESHOLD": RPC_PIXEL_ERROR}
        # With a DEM, GDAL takes the input height as height above the DEM: 0 puts the points
        # on it. Without one, the input height is the height itself.
        self._height = 0.0 if dem else float(rpcs.height_off)
        self._dem = DemHeights(dem) if dem else None
        if dem:
            self._options["RPC_DEM"] = dem

    def heights(self, lons: FloatArray, lats: FloatArray) -> FloatArray:
        """The DEM's heights, else the RPC height offset (where the points were placed)."""
        return _dem_or(self._dem, lons, lats, float(self.rpcs.height_off))

    def _heights(self, count: int) -> FloatArray:
        return np.full(count, self._height)

    def image_to_world(self, cols: FloatArray, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Pixel coordinates to lon/lat degrees."""
        if cols.size == 0:
            return _floats(cols), _floats(rows)
        with RPCTransformer(self.rpcs, **self._options) as transformer:
            lons, lats = transformer.xy(rows, cols, zs=self._heights(cols.size), offset="ul")
        return _floats(lons), _floats(lats)

    def world_to_image(self, lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Lon/lat degrees to pixel coordinates."""
        if lons.size == 0:
            return _floats(lons), _floats(lats)
        with RPCTransformer(self.rpcs, **self._options) as transformer:
            rows, cols = transformer.rowcol(lons, lats, zs=self._heights(lons.size), op=_identity)
        return _floats(cols), _floats(rows)


class GcpSensorModel:
    """Pixel <-> world through ground control points (a GDAL polynomial fitted to them)."""

    def __init__(
        self, gcps: Sequence[GroundControlPoint], crs: CRS, dem: str | None = None
    ) -> None:
        """Build the model from an image's GCPs and their CRS; heights from ``dem``."""
        self.gcps = list(gcps)
        self.crs = crs
        self._is_wgs84 = crs == WGS84
        self._dem = DemHeights(dem) if dem else None
        zs = [gcp.z for gcp in self.gcps if gcp.z is not None]
        self._mean_height = float(np.mean(zs)) if zs else 0.0

    def heights(self, lons: FloatArray, lats: FloatArray) -> FloatArray:
        """The DEM's heights, else the GCPs' mean height (0 when they have none)."""
        return _dem_or(self._dem, lons, lats, self._mean_height)

    def image_to_world(self, cols: FloatArray, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Pixel coordinates to lon/lat degrees."""
        if cols.size == 0:
            return _floats(cols), _floats(rows)
        with GCPTransformer(self.gcps) as transformer:
            xs, ys = transformer.xy(rows, cols, offset="ul")
        if self._is_wgs84:
            return _floats(xs), _floats(ys)
        lons, lats = warp_transform(self.crs, WGS84, _floats(xs), _floats(ys))
        return _floats(lons), _floats(lats)

    def world_to_image(self, lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Lon/lat degrees to pixel coordinates."""
        if lons.size == 0:
            return _floats(lons), _floats(lats)
        xs, ys = lons, lats
        if not self._is_wgs84:
            projected = warp_transform(WGS84, self.crs, lons, lats)
            xs, ys = _floats(projected[0]), _floats(projected[1])
        with GCPTransformer(self.gcps) as transformer:
            rows, cols = transformer.rowcol(xs, ys, op=_identity)
        return _floats(cols), _floats(rows)


def sensor_model_for(
    transform: Affine | None,
    crs: CRS | None,
    rpcs: RPC | None = None,
    gcps: tuple[Sequence[GroundControlPoint], CRS | None] | None = None,
    dem: str | None = None,
    sicd_xml: str | None = None,
) -> SensorModel | None:
    """The best sensor model for an image, or None when it has no georeferencing.

    Raises:
        ImageOpenError: If ``sicd_xml`` is not a SICD that can be projected.
    """
    if sicd_xml is not None:
        # sarpy takes ~0.7 s to import: only SICD images pay for it.
        from tiling.sicd import SicdSensorModel  # noqa: PLC0415

        return SicdSensorModel(sicd_xml, dem)
    if transform is not None and crs is not None:
        return AffineSensorModel(transform, crs, dem)
    if rpcs is not None:
        return RpcSensorModel(rpcs, dem)
    if gcps is not None and gcps[0] and gcps[1] is not None:
        return GcpSensorModel(gcps[0], gcps[1], dem)
    return None
