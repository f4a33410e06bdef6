"""Opening images (local paths and ``s3://`` through GDAL's /vsis3) and reading windows.

GDAL reads its S3 endpoint and credentials from the process environment
(``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING`` for an emulator).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.rpc import RPC
from rasterio.windows import Window as RioWindow

from tiling.errors import ImageOpenError
from tiling.gdalenv import ensure_thread_env
from tiling.grid import Window
from tiling.sensor import SensorModel, sensor_model_for


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the image header says: size, pixels and georeferencing."""

    url: str
    width: int
    height: int
    band_count: int
    dtype: str
    driver: str
    transform: Affine | None
    crs: CRS | None
    tags: dict[str, str] = field(default_factory=dict)
    rpcs: RPC | None = None
    gcps: tuple[tuple[GroundControlPoint, ...], CRS | None] | None = None

    def sensor_model(self, dem: str | None = None) -> SensorModel | None:
        """The best sensor model the image has (affine, RPC, GCP), None without any."""
        return sensor_model_for(self.transform, self.crs, self.rpcs, self.gcps, dem)

    @property
    def bounds(self) -> Window:
        """The whole image as a window."""
        return Window(0, 0, self.width, self.height)

    def tile_transform(self, window: Window) -> Affine | None:
        """The affine transform of a window of the image."""
        if self.transform is None:
            return None
        return self.transform @ Affine.translation(window.col_off, window.row_off)


def _open(url: str) -> DatasetReader:
    ensure_thread_env()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(url)
    except RasterioError as err:
        raise ImageOpenError(f"cannot open image {url}: {err}") from err


def describe_image(url: str) -> ImageInfo:
    """Read the header of an image.

    Raises:
        ImageOpenError: If the image does not exist or GDAL cannot read it.
    """
    with _open(url) as src:
        georeferenced = src.crs is not None and not src.transform.is_identity
        return ImageInfo(
            url=url,
            width=src.width,
            height=src.height,
            band_count=src.count,
            dtype=src.dtypes[0],
            driver=src.driver,
            transform=src.transform if georeferenced else None,
            crs=src.crs if georeferenced else None,
            tags={str(k): str(v) for k, v in src.tags().items()},
            rpcs=src.rpcs,
            gcps=(tuple(src.gcps[0]), src.gcps[1]) if src.gcps[0] else None,
        )


class WindowReader:
    """Reads windows of one image from any thread (one GDAL handle per thread)."""

    def __init__(self, url: str) -> None:
        """Prepare to read ``url``; handles are opened lazily, one per thread."""
        self._url = url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._handles: list[DatasetReader] = []

    def read(self, window: Window) -> npt.NDArray[Any]:
        """Read a ``(bands, rows, cols)`` window.

        Raises:
            ImageOpenError: If GDAL fails to read the pixels.
        """
        handle: DatasetReader | None = getattr(self._local, "handle", None)
        if handle is None:
            handle = _open(self._url)
            self._local.handle = handle
            with self._lock:
                self._handles.append(handle)
        rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
        try:
            return np.asarray(handle.read(window=rio_window))
        except RasterioError as err:
            # rasterio says "Read failed. See previous exception"; GDAL's reason is the cause.
            reason = err.__cause__ or err
            raise ImageOpenError(f"cannot read {window} of {self._url}: {reason}") from err

    def close(self) -> None:
        """Close every handle opened by any thread."""
        with self._lock:
            for handle in self._handles:
                handle.close()
            self._handles.clear()

    def __enter__(self) -> WindowReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
