"""One long-lived rasterio/GDAL environment per thread.

Outside an active ``rasterio.Env`` rasterio builds a new one around every GDAL call (and, with
AWS keys in the process environment, a boto3 session with it). Per tile that cost more CPU than
encoding the tile (measured with py-spy on the throughput benchmark), so every thread that
touches GDAL through this package enters one environment for its lifetime instead.
"""

from __future__ import annotations

import threading

import rasterio

_local = threading.local()


def ensure_thread_env() -> None:
    """Enter a rasterio environment for the calling thread if it has none yet."""
    if getattr(_local, "env", None) is None:
        env = rasterio.Env.from_defaults()
        env.__enter__()  # kept for the thread's lifetime on purpose
        _local.env = env
