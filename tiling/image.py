"""Opening images (local paths and ``s3://`` through GDAL's /vsis3) and reading windows.

GDAL reads its S3 endpoint and credentials from the process environment
(``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING`` for an emulator). An image given
:class:`~tiling.gdalenv.ReadCredentials` is opened and read with those instead, on whichever
thread does it, and only for that image (:func:`tiling.gdalenv.image_credentials`).

A SICD NITF (complex SAR) is recognised by the SICD XML in its data extension segments. GDAL
reads its pixels as two bands (I and Q, or amplitude and phase), which tiles keep. A SICD too
large for one NITF image segment is stored in several, one below the other; GDAL opens only
the first, so they are stacked back together here (a VRT).
"""

from __future__ import annotations

import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
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

from tiling.encode import TileGeoref
from tiling.errors import ImageOpenError
from tiling.gdalenv import (
    ReadCredentials,
    ensure_thread_env,
    forget_cached,
    holding_path,
    image_credentials,
    open_unshared,
    vsi_path,
)
from tiling.grid import Window
from tiling.nitf_des import SICD_DES_NAMES, XmlDes, find_xml_des
from tiling.sensor import SensorModel, sensor_model_for

# GDAL data type names of the pixel types SICD stores (VRT band types).
_GDAL_TYPES = {"uint8": "Byte", "int16": "Int16", "float32": "Float32"}


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
    sicd: XmlDes | None = None  # the SICD XML DES of a SICD NITF

    def sensor_model(self, dem: str | None = None) -> SensorModel | None:
        """The best sensor model the image has (SICD, affine, RPC, GCP), None without any."""
        sicd_xml = self.sicd.xml if self.sicd is not None else None
        return sensor_model_for(self.transform, self.crs, self.rpcs, self.gcps, dem, sicd_xml)

    @property
    def bounds(self) -> Window:
        """The whole image as a window."""
        return Window(0, 0, self.width, self.height)

    def tile_transform(self, window: Window) -> Affine | None:
        """The affine transform of a window of the image."""
        if self.transform is None:
            return None
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def tile_georef(self, window: Window) -> TileGeoref | None:
        """What a tile of ``window`` carries of the image's georeferencing, None for nothing.

        Its affine transform; for a SICD, the NITF fields and SICD XML of the chip.

        Raises:
            ImageOpenError: If the SICD metadata cannot be projected.
        """
        if self.sicd is not None:
            from tiling.sicd import chip_nitf_options  # noqa: PLC0415 - sarpy: see sensor.py

            return TileGeoref(None, None, chip_nitf_options(self.sicd, window))
        transform = self.tile_transform(window)
        return TileGeoref(transform, self.crs) if transform is not None else None


@contextmanager
def _reading_as(url: str, credentials: ReadCredentials | None) -> Iterator[None]:
    """GDAL calls in the block read ``url`` with ``credentials`` (None: the worker's own)."""
    path = vsi_path(url)
    if credentials is None or path is None:
        yield
        return
    with image_credentials(credentials, path):
        yield


def _holding(url: str, credentials: ReadCredentials | None) -> ExitStack:
    """Held while a handle of ``url`` opened with ``credentials`` of its own may be open."""
    stack = ExitStack()
    path = vsi_path(url)
    if credentials is not None and path is not None:
        stack.enter_context(holding_path(path))
    return stack


def _open_path(
    url: str, path: str | None = None, credentials: ReadCredentials | None = None
) -> DatasetReader:
    ensure_thread_env()
    vsi = vsi_path(url)
    if credentials is None:
        open_unshared(vsi)
    elif vsi is not None:
        forget_cached(vsi)  # a failure cached under other keys must not stick
    try:
        with _reading_as(url, credentials), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path or url)
    except RasterioError as err:
        raise ImageOpenError(f"cannot open image {url}: {err}") from err


def _sicd_des(src: DatasetReader) -> XmlDes | None:
    if src.driver != "NITF":
        return None
    listing = src.tags(ns="xml:DES").get("xml:DES")
    return find_xml_des(listing, SICD_DES_NAMES, "SICD") if listing else None


def _segments_vrt(url: str, src: DatasetReader, credentials: ReadCredentials | None) -> str:
    """A VRT stacking the image segments of a SICD NITF, top to bottom.

    Raises:
        ImageOpenError: If the segments cannot form one image.
    """
    vrt = ET.Element("VRTDataset")
    bands = [ET.SubElement(vrt, "VRTRasterBand", band=str(b + 1)) for b in range(src.count)]
    row = 0
    for name in src.subdatasets:
        with _open_path(url, name, credentials) as segment:
            if (segment.width, segment.count, segment.dtypes) != (src.width, src.count, src.dtypes):
                raise ImageOpenError(
                    f"cannot open image {url}: its SICD image segments differ in width, band "
                    "count or pixel type"
                )
            for index, band in enumerate(bands):
                source = ET.SubElement(band, "SimpleSource")
                ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = name
                ET.SubElement(source, "SourceBand").text = str(index + 1)
                size = {"xSize": str(segment.width), "ySize": str(segment.height)}
                ET.SubElement(source, "SrcRect", {"xOff": "0", "yOff": "0", **size})
                ET.SubElement(source, "DstRect", {"xOff": "0", "yOff": str(row), **size})
            row += segment.height
    gdal_type = _GDAL_TYPES.get(src.dtypes[0])
    if gdal_type is None:
        raise ImageOpenError(f"cannot open image {url}: SICD with {src.dtypes[0]} pixels")
    for band in bands:
        band.set("dataType", gdal_type)
    vrt.set("rasterXSize", str(src.width))
    vrt.set("rasterYSize", str(row))
    return ET.tostring(vrt, encoding="unicode")


def _open(url: str, credentials: ReadCredentials | None = None) -> DatasetReader:
    """Open an image for its pixels: a SICD in several image segments as one (a VRT)."""
    src = _open_path(url, credentials=credentials)
    if len(src.subdatasets) < 2 or _sicd_des(src) is None:  # noqa: PLR2004 - one segment
        return src
    with src:
        vrt = _segments_vrt(url, src, credentials)
    return _open_path(url, vrt, credentials)


def describe_image(url: str, credentials: ReadCredentials | None = None) -> ImageInfo:
    """Read the header of an image, with ``credentials`` if given (else the worker's own).

    Raises:
        ImageOpenError: If the image does not exist or GDAL cannot read it, or if it is a SICD
            whose metadata cannot be projected or does not match its pixels.
    """
    with _holding(url, credentials):
        return _describe(url, credentials)


def _describe(url: str, credentials: ReadCredentials | None) -> ImageInfo:
    with _open_path(url, credentials=credentials) as src, _reading_as(url, credentials):
        sicd = _sicd_des(src)
        width, height = src.width, src.height
        if sicd is not None and len(src.subdatasets) > 1:
            with _open(url, credentials) as stacked:
                width, height = stacked.width, stacked.height
        # A SICD's georeferencing is its sensor model; GDAL's IGEOLO corners are coarser.
        georeferenced = sicd is None and src.crs is not None and not src.transform.is_identity
        info = ImageInfo(
            url=url,
            width=width,
            height=height,
            band_count=src.count,
            dtype=src.dtypes[0],
            driver=src.driver,
            transform=src.transform if georeferenced else None,
            crs=src.crs if georeferenced else None,
            tags={str(k): str(v) for k, v in src.tags().items()},
            rpcs=src.rpcs,
            gcps=(tuple(src.gcps[0]), src.gcps[1]) if src.gcps[0] and sicd is None else None,
            sicd=sicd,
        )
    if sicd is not None:
        from tiling.sicd import check_sicd  # noqa: PLC0415 - sarpy: see sensor.py

        check_sicd(sicd.xml, url, (height, width))
    return info


class WindowReader:
    """Reads windows of one image through one GDAL handle, opened on first use.

    A reader is used by one task at a time, from whichever thread runs it. Readers working on
    the same image in parallel each keep their own handle, and with it their own decoded
    blocks: giving each a contiguous run of tiles means a source block is decoded once, not
    once per reader that touches it. ``close`` waits for a read in progress (a cancelled task's
    thread may still be reading).
    """

    def __init__(
        self,
        url: str,
        credentials: ReadCredentials | None = None,
        path: str | None = None,
        on_read: Callable[[Window], None] | None = None,
    ) -> None:
        """Prepare to read ``url``, with ``credentials`` if given (else the worker's own).

        With ``path``, GDAL opens that path for the image's bytes instead (bytes fetched ahead,
        served by :mod:`tiling.vsiplugin`); ``on_read`` is told of every window read.
        """
        self._url = url
        self._credentials = credentials
        self._path = path
        self._on_read = on_read
        self._handle: DatasetReader | None = None
        self._holding: ExitStack | None = None
        self._lock = threading.Lock()

    def read(self, window: Window) -> npt.NDArray[Any]:
        """Read a ``(bands, rows, cols)`` window.

        Raises:
            ImageOpenError: If GDAL fails to read the pixels.
        """
        ensure_thread_env()  # the handle may have been opened by another thread
        rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
        try:
            with self._lock:
                if self._credentials is None:  # the common case: nothing to set up
                    pixels = self._read_locked(rio_window)
                else:
                    with _reading_as(self._url, self._credentials):
                        pixels = self._read_locked(rio_window)
        except RasterioError as err:
            # rasterio says "Read failed. See previous exception"; GDAL's reason is the cause.
            reason = err.__cause__ or err
            raise ImageOpenError(f"cannot read {window} of {self._url}: {reason}") from err
        if self._on_read is not None:
            self._on_read(window)
        return pixels

    def _read_locked(self, window: RioWindow) -> npt.NDArray[Any]:
        if self._handle is None:
            self._holding = _holding(self._url, self._credentials)
            if self._path is None:
                self._handle = _open(self._url, self._credentials)
            else:
                self._handle = _open_path(self._url, self._path)
        return np.asarray(self._handle.read(window=window))

    def close(self) -> None:
        """Close the handle, if it was opened."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            if self._holding is not None:
                self._holding.close()
                self._holding = None

    def __enter__(self) -> WindowReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
