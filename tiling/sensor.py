"""Sensor models: image pixel coordinates to WGS84 longitude/latitude, vectorised."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

WGS84 = CRS.from_epsg(4326)

FloatArray = npt.NDArray[np.float64]


class AffineSensorModel:
    """Pixel -> world through the image's affine transform and CRS, reprojected to WGS84."""

    def __init__(self, transform: Affine, crs: CRS) -> None:
        """Build the model from a dataset's transform and CRS."""
        self.transform = transform
        self.crs = crs
        self._is_wgs84 = crs == WGS84

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


def sensor_model_for(transform: Affine | None, crs: CRS | None) -> AffineSensorModel | None:
    """The best sensor model for an image, or None when it has no georeferencing."""
    if transform is None or crs is None:
        return None
    return AffineSensorModel(transform, crs)
