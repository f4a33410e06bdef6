"""Planning an image: the pixel bounds to process (whole image or region of interest) and the
tiles over them. No I/O."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from shapely.geometry.base import BaseGeometry

from postprocessing.features import TileLayout
from tiling.encode import resolve_encoding
from tiling.errors import UnsupportedEncodingError
from tiling.grid import Window, axis_origins, tile_grid
from tiling.image import ImageInfo
from tiling.roi import RegionError, region_in_pixels, tiles_in_region
from worker.contract.messages import ImageRequest
from worker.errors import PermanentError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImagePlan:
    """What to process of one image."""

    bounds: Window
    tiles: list[Window]
    layout: TileLayout
    tile_format: str
    tile_compression: str
    region: BaseGeometry | None = None


def tile_layout(bounds: Window, request: ImageRequest) -> TileLayout:
    """The grid of the request's tiles over ``bounds``, for overlap-band selection."""
    size, overlap = request.image_processor_tile_size, request.image_processor_tile_overlap
    cols = np.asarray(axis_origins(bounds.width, size, overlap), dtype=np.intp) + bounds.col_off
    rows = np.asarray(axis_origins(bounds.height, size, overlap), dtype=np.intp) + bounds.row_off
    return TileLayout(cols, rows, min(size, bounds.width), min(size, bounds.height))


def plan_image(info: ImageInfo, request: ImageRequest, dem: str | None = None) -> ImagePlan:
    """Bounds, tiles and region of an image for a request.

    With a region of interest the grid starts at the region's corner, only tiles overlapping
    the region are kept, and the region (in pixels) is returned to filter the features.

    Raises:
        PermanentError: If the region cannot be placed on the image.
    """
    bounds, region = info.bounds, None
    if request.region_of_interest is not None:
        sensor_model = info.sensor_model(dem)
        if sensor_model is None:
            raise PermanentError(
                f"regionOfInterest needs a georeferenced image; {info.url} has no georeferencing"
            )
        try:
            bounds, region = region_in_pixels(request.region_of_interest, sensor_model, bounds)
        except RegionError as err:
            raise PermanentError(f"{err} ({info.url}, {info.width}x{info.height} px)") from err
    size, overlap = request.image_processor_tile_size, request.image_processor_tile_overlap
    tiles = tile_grid(bounds, size, overlap)
    if region is not None:
        tiles = tiles_in_region(tiles, region)
    tile_format, compression = _encoding(info, request)
    return ImagePlan(bounds, tiles, tile_layout(bounds, request), tile_format, compression, region)


def _encoding(info: ImageInfo, request: ImageRequest) -> tuple[str, str]:
    asked = (
        request.image_processor_tile_format.value,
        request.image_processor_tile_compression.value,
    )
    try:
        chosen = resolve_encoding(info.dtype, *asked)
    except UnsupportedEncodingError as err:
        raise PermanentError(f"{err} ({info.url})") from err
    if chosen != asked:
        log.warning(
            "job %s: %s pixels cannot be %s/%s; tiles are %s/%s",
            request.job_id,
            info.dtype,
            *asked,
            *chosen,
        )
    return chosen
