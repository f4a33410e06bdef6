"""Where in its file each window's source blocks are: the input of :func:`plan_reads`.

GDAL reports the byte offset and size of every block of a GeoTIFF (COGs included) in its
``TIFF`` metadata (``BLOCK_OFFSET_<x>_<y>``, ``BLOCK_SIZE_<x>_<y>``); reading them loads only
the header's offset arrays, never pixels. An uncompressed NITF (IC=NC) is laid out by its
image subheader, which GDAL hands over whole (``NITF_METADATA``): the rows of its blocks are
computed from it. Other images answer None: their reads are not planned (see
:mod:`worker.readahead`).
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Sequence

import rasterio
from rasterio.enums import Interleaving
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader

from tiling.byteranges import ByteRange, ReadPlan, plan_reads
from tiling.errors import ImageOpenError
from tiling.gdalenv import ensure_thread_env
from tiling.grid import Window
from tiling.nitf_read import image_layout

# Bytes on either side of a block that GDAL may read with it (a COG's block leader and
# trailer: 4 bytes each).
BLOCK_MARGIN_BYTES = 8


def _block(src: DatasetReader, band: int, x: int, y: int) -> ByteRange | None:
    offset = src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
    size = src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band)
    if not offset or not size:
        return None  # a sparse block: GDAL makes it up, reads nothing
    start = max(0, int(offset) - BLOCK_MARGIN_BYTES)
    return ByteRange(start, int(offset) + int(size) + BLOCK_MARGIN_BYTES)


def window_blocks(src: DatasetReader, windows: Sequence[Window]) -> list[list[ByteRange]] | None:
    """Per window, the byte ranges of the full-resolution blocks under it; None when the
    driver does not say where its blocks are."""
    if src.driver == "NITF":
        return _nitf_blocks(src, windows)
    if src.driver != "GTiff" or src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1) is None:
        return None
    block_rows, block_cols = src.block_shapes[0]
    bands = [1] if src.interleaving is not Interleaving.band else list(range(1, src.count + 1))
    known: dict[tuple[int, int, int], ByteRange | None] = {}
    found: list[list[ByteRange]] = []
    for window in windows:
        ranges: list[ByteRange] = []
        for y in range(window.row_off // block_rows, (window.row_end - 1) // block_rows + 1):
            for x in range(window.col_off // block_cols, (window.col_end - 1) // block_cols + 1):
                for band in bands:
                    key = (band, x, y)
                    if key not in known:
                        known[key] = _block(src, band, x, y)
                    if (block := known[key]) is not None:
                        ranges.append(block)
        found.append(ranges)
    return found


def _nitf_headers(src: DatasetReader) -> bytes | None:
    """The file header and first image subheader, as GDAL read them."""
    found = []
    for key in ("NITFFileHeader", "NITFImageSubheader"):
        value = src.get_tag_item(key, "NITF_METADATA")
        if not value or " " not in value:
            return None
        found.append(base64.b64decode(value.split(" ", 1)[1]))
    return b"".join(found)


def _nitf_blocks(src: DatasetReader, windows: Sequence[Window]) -> list[list[ByteRange]] | None:
    """The byte ranges under each window of an uncompressed NITF's first image.

    One block (GDAL reads it row by row): the window's rows of each band. Several blocks (GDAL
    reads whole blocks): the blocks under the window, each band's part for IMODE B and S.
    """
    headers = _nitf_headers(src)
    found = image_layout(headers) if headers is not None and len(src.subdatasets) < 2 else None  # noqa: PLR2004
    if found is None:
        return None
    start, (rows, cols, bands, dtype, mode, per_row, per_column, width, height) = found
    if (rows, cols, bands) != (src.height, src.width, src.count):
        return None
    item = dtype.itemsize
    block_bytes = width * height * bands * item
    row_bytes = width * item * (1 if mode in b"BS" else bands)
    band_bytes = width * height * item  # one band of one block (B) or of the image (S)
    found_ranges: list[list[ByteRange]] = []
    for window in windows:
        ranges: list[ByteRange] = []
        for by in range(window.row_off // height, (window.row_end - 1) // height + 1):
            first, last = 0, height
            if per_row == per_column == 1:
                first, last = window.row_off, window.row_end
            for bx in range(window.col_off // width, (window.col_end - 1) // width + 1):
                block = by * per_row + bx
                for band in range(bands if mode in b"BS" else 1):
                    if mode == b"S":
                        at = start + (band * per_row * per_column + block) * band_bytes
                    else:
                        at = start + block * block_bytes + band * band_bytes
                    ranges.append(ByteRange(at + first * row_bytes, at + last * row_bytes))
        found_ranges.append(ranges)
    return found_ranges


def plan_window_reads(path: str, windows: Sequence[Window], range_bytes: int) -> ReadPlan | None:
    """Open ``path`` (its header only) and plan the reads of ``windows`` (in the order they
    will be read) in reads of about ``range_bytes``; None when the driver does not say where
    its blocks are.

    Raises:
        ImageOpenError: If GDAL cannot open ``path``.
    """
    ensure_thread_env()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            blocks = window_blocks(src, windows)
            streams = band_streams(src)
    except RasterioError as err:
        raise ImageOpenError(f"cannot open {path}: {err}") from err
    if blocks is None:
        return None
    # A tile of a band-separate image needs a read per band at once: smaller reads keep the
    # bytes held for the tiles in progress the same.
    return plan_reads(blocks, max(1, range_bytes // streams))


def band_streams(src: DatasetReader) -> int:
    """How many separate runs of bytes a window's pixels lie in: the band count where each
    band is stored apart (GeoTIFF band interleaving, NITF IMODE B or S), else 1."""
    if src.driver == "GTiff" and src.interleaving is Interleaving.band:
        return int(src.count)
    if src.driver == "NITF" and src.tags().get("NITF_IMODE") in ("B", "S"):
        return int(src.count)
    return 1
