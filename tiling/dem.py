"""Heights from a DEM (any GDAL raster) at lon/lat points, bilinear between pixel centres.

Only the window around the points is read, so a DEM on S3 covering a continent costs a few
blocks per call. Heights are taken as they are (as GDAL's RPC transformer does when the DEM has
no vertical datum): ellipsoidal heights are expected.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window as RioWindow

from tiling.errors import ImageOpenError
from tiling.gdalenv import ensure_thread_env

FloatArray = npt.NDArray[np.float64]

WGS84 = CRS.from_epsg(4326)


class DemHeights:
    """Samples a DEM; points outside it or on its nodata get NaN."""

    def __init__(self, url: str) -> None:
        """Sample the DEM at ``url`` (opened for each use: safe from any thread)."""
        self.url = url

    def __call__(self, lons: FloatArray, lats: FloatArray) -> FloatArray:
        """Heights at the points, NaN where the DEM has none.

        Raises:
            ImageOpenError: If the DEM cannot be read.
        """
        with self.opened() as heights:
            return heights(lons, lats)

    def heights_or(self, lons: FloatArray, lats: FloatArray, default: float) -> FloatArray:
        """Heights at the points, ``default`` where the DEM has none.

        Raises:
            ImageOpenError: If the DEM cannot be read.
        """
        sampled = self(lons, lats)
        return np.where(np.isnan(sampled), default, sampled)

    @contextmanager
    def opened(self) -> Iterator[Callable[[FloatArray, FloatArray], FloatArray]]:
        """The DEM opened once for several samplings (as :meth:`__call__` samples).

        Raises:
            ImageOpenError: If the DEM cannot be read.
        """
        ensure_thread_env()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dem = rasterio.open(self.url)
        except RasterioError as err:
            raise ImageOpenError(f"cannot open DEM {self.url}: {err}") from err

        def heights(lons: FloatArray, lats: FloatArray) -> FloatArray:
            out = np.full(lons.shape, np.nan)
            if lons.size:
                try:
                    self._sample(dem, lons, lats, out)
                except RasterioError as err:
                    raise ImageOpenError(f"cannot read DEM {self.url}: {err}") from err
            return out

        with dem:
            yield heights

    @staticmethod
    def _sample(
        dem: rasterio.io.DatasetReader, lons: FloatArray, lats: FloatArray, out: FloatArray
    ) -> None:
        xs, ys = lons, lats
        if dem.crs is not None and dem.crs != WGS84:
            projected = warp_transform(WGS84, dem.crs, lons, lats)
            xs, ys = np.asarray(projected[0], float), np.asarray(projected[1], float)
        a, b, c, d, e, f = (~dem.transform)[:6]
        x_px, y_px = a * xs + b * ys + c, d * xs + e * ys + f
        inside = (x_px >= 0) & (x_px <= dem.width) & (y_px >= 0) & (y_px <= dem.height)
        if not inside.any():
            return
        # Fractional indices of pixel centres (centre (0, 0) is at pixel coordinate (0.5, 0.5));
        # between the outer centres and the edge, the outer pixels' values.
        cols = np.clip(x_px[inside] - 0.5, 0.0, dem.width - 1.0)
        rows = np.clip(y_px[inside] - 0.5, 0.0, dem.height - 1.0)
        col0, row0 = math.floor(cols.min()), math.floor(rows.min())
        col1 = min(math.floor(cols.max()) + 1, dem.width - 1)
        row1 = min(math.floor(rows.max()) + 1, dem.height - 1)
        window = RioWindow(col0, row0, col1 - col0 + 1, row1 - row0 + 1)
        grid = dem.read(1, window=window, masked=True).astype(np.float64).filled(np.nan)
        cols, rows = cols - col0, rows - row0
        c0 = np.minimum(np.floor(cols).astype(np.intp), grid.shape[1] - 1)
        r0 = np.minimum(np.floor(rows).astype(np.intp), grid.shape[0] - 1)
        c1 = np.minimum(c0 + 1, grid.shape[1] - 1)
        r1 = np.minimum(r0 + 1, grid.shape[0] - 1)
        tc, tr = cols - c0, rows - r0
        top = grid[r0, c0] * (1 - tc) + grid[r0, c1] * tc
        bottom = grid[r1, c0] * (1 - tc) + grid[r1, c1] * tc
        out[inside] = top * (1 - tr) + bottom * tr
