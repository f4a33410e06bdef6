"""A quick look at a job's result: the image, reduced, with the detections drawn as boxes."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from tiling.gdalenv import ensure_thread_env

BOX_COLOUR = (255, 32, 32)
RGB_BANDS = 3


def read_overview(url: str, max_side_px: int) -> tuple[npt.NDArray[np.uint8], float]:
    """The image reduced to at most ``max_side_px`` a side, as 8-bit RGB (3, rows, cols), and
    the scale from full-image pixels to preview pixels."""
    ensure_thread_env()
    with warnings.catch_warnings(), rasterio.open(url) as src:
        # A picture needs no georeferencing: say nothing on the user's terminal.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        scale = min(1.0, max_side_px / max(src.width, src.height))
        rows, cols = max(1, round(src.height * scale)), max(1, round(src.width * scale))
        bands = [1, 2, 3] if src.count >= RGB_BANDS else [1]
        data = src.read(bands, out_shape=(len(bands), rows, cols), resampling=Resampling.average)
    pixels = data.astype(np.float64)
    if np.iscomplexobj(data):
        pixels = np.abs(data).astype(np.float64)
    low, high = np.percentile(pixels, [2, 98]) if pixels.size else (0.0, 1.0)
    stretched = np.clip((pixels - low) / max(high - low, 1e-9) * 255, 0, 255).astype(np.uint8)
    if stretched.shape[0] == 1:
        stretched = np.repeat(stretched, RGB_BANDS, axis=0)
    return stretched, scale


def draw_boxes(
    rgb: npt.NDArray[np.uint8], boxes: list[list[float]], scale: float
) -> npt.NDArray[np.uint8]:
    """Draw ``[minx, miny, maxx, maxy]`` full-image pixel boxes, 1 px outlines, on a copy."""
    out = rgb.copy()
    rows, cols = out.shape[1], out.shape[2]
    colour = np.asarray(BOX_COLOUR, dtype=np.uint8)[:, None]
    for minx, miny, maxx, maxy in boxes:
        x0, x1 = (int(np.clip(v * scale, 0, cols - 1)) for v in (minx, maxx))
        y0, y1 = (int(np.clip(v * scale, 0, rows - 1)) for v in (miny, maxy))
        out[:, y0, x0 : x1 + 1] = colour
        out[:, y1, x0 : x1 + 1] = colour
        out[:, y0 : y1 + 1, x0] = colour
        out[:, y0 : y1 + 1, x1] = colour
    return out


def feature_boxes(collection: dict[str, Any]) -> list[list[float]]:
    """The ``imageBBox`` of every feature that has one."""
    boxes = []
    for feature in collection.get("features", []):
        box = (feature.get("properties") or {}).get("imageBBox")
        if isinstance(box, list) and len(box) == 4:  # noqa: PLR2004
            boxes.append([float(v) for v in box])
    return boxes


def write_png(path: str, rgb: npt.NDArray[np.uint8]) -> None:
    """Write an RGB array as PNG (a picture: no georeferencing, and no warning about it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="PNG", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8"
        ) as dst:
            dst.write(rgb)


def preview(url: str, collection: dict[str, Any], path: str, max_side_px: int = 1024) -> int:
    """Write the preview PNG of an image and its features; returns the number of boxes."""
    rgb, scale = read_overview(url, max_side_px)
    boxes = feature_boxes(collection)
    write_png(path, draw_boxes(rgb, boxes, scale))
    return len(boxes)
