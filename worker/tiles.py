"""One tile's work on the thread pool: read and encode windows, parse a model's reply."""

from __future__ import annotations

from postprocessing.detections import parse_model_output
from postprocessing.table import DetectionTable
from tiling.encode import encode_tile
from tiling.errors import TilingError
from tiling.grid import Window
from tiling.image import ImageInfo, WindowReader


def encode_window(
    reader: WindowReader, info: ImageInfo, window: Window, tile_format: str, compression: str
) -> bytes:
    """Read one window and encode it as a tile (runs on the thread pool)."""
    return encode_tile(reader.read(window), tile_format, compression, info.tile_georef(window))


def encode_windows(
    reader: WindowReader,
    info: ImageInfo,
    windows: list[Window],
    tile_format: str,
    compression: str,
) -> list[bytes | TilingError]:
    """Encode consecutive windows in one trip to the thread pool; a tile that cannot be read
    or encoded gets its error in place of its bytes."""
    encoded: list[bytes | TilingError] = []
    for window in windows:
        try:
            encoded.append(encode_window(reader, info, window, tile_format, compression))
        except TilingError as err:
            encoded.append(err)
    return encoded


def parse_tile_reply(
    body: bytes, window: Window, max_features: int, answered_s: float
) -> DetectionTable:
    """Parse a model reply and move it to full-image pixels; its detections are stamped with
    the time the model answered (``inferenceDT``). Runs on the thread pool for large replies."""
    table = parse_model_output(
        body, window.col_off, window.row_off, (window.width, window.height), max_features
    )
    return table.answered_at(answered_s)
