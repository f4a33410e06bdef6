"""Staged regions: what a finished region hands to its image's finaliser, and its bytes.

A region's result is kept (by :class:`worker.ports.Staging`; in S3 by
:mod:`worker.adapters.s3_staging`) under a key derived from job, image, run and region, so a
region done twice overwrites its object instead of adding a second copy, and a late region of an
earlier run of the image never lands among the regions of the current one. Objects are
``numpy.savez`` archives of plain arrays (the detection columns and the failed tiles as JSON);
nothing is pickled. Pure: no I/O.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from postprocessing.table import DetectionTable, table_arrays, table_from_arrays
from tiling.grid import Window
from worker.contract.records import FailedTile
from worker.errors import RetryableError


@dataclass(frozen=True)
class StagedRegion:
    """What a finished region hands to the finaliser."""

    table: DetectionTable
    tile_count: int
    failed_tiles: tuple[FailedTile, ...] = ()
    lost_tiles: int = 0

    @property
    def failed_count(self) -> int:
        """Tiles of the region without results: failed ones, and those of a lost region
        (one given up before its tiles were known)."""
        return len(self.failed_tiles) + self.lost_tiles


class StagingMissingError(RetryableError):
    """A region recorded as finished has no staged object (yet)."""


class StagingCorruptError(RetryableError):
    """A staged object cannot be read back."""


def encode_region(staged: StagedRegion) -> io.BytesIO:
    """The staged region as an in-memory file, at its start (runs on the thread pool)."""
    meta = {
        "tile_count": staged.tile_count,
        "lost_tiles": staged.lost_tiles,
        "failed_tiles": [t.as_json() for t in staged.failed_tiles],
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        **table_arrays(staged.table),
    }
    buffer = io.BytesIO()
    save: Any = np.savez  # its stubs type **arrays as its own keyword options
    save(buffer, **arrays)
    buffer.seek(0)
    return buffer


def decode_region(data: bytes) -> StagedRegion:
    """The region :func:`encode_region` wrote.

    Raises:
        StagingCorruptError: If the bytes are not a staged region.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
            table = table_from_arrays(arrays)
        failed = tuple(
            FailedTile(Window(t["col"], t["row"], t["width"], t["height"]), t["reason"])
            for t in meta["failed_tiles"]
        )
        return StagedRegion(table, int(meta["tile_count"]), failed, int(meta["lost_tiles"]))
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise StagingCorruptError(f"staged region unreadable: {err}") from err
