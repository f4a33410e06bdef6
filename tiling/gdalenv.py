"""One long-lived rasterio/GDAL environment per thread, and per-image S3 credentials in it.

Outside an active ``rasterio.Env`` rasterio builds a new one around every GDAL call (and, with
AWS keys in the process environment, a boto3 session with it). Per tile that cost more CPU than
encoding the tile (measured with py-spy on the throughput benchmark), so every thread that
touches GDAL through this package enters one environment for its lifetime instead.

An image read under a role of its own (the request's ``imageReadRole``) gets that role's keys
as *thread-local* GDAL configuration options only while this thread opens or reads it
(:func:`image_credentials`); see ``docs/decisions.md`` ("Per-image read credentials").
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import rasterio
import rasterio.env
from rasterio._env import del_gdal_config

log = logging.getLogger(__name__)

_local = threading.local()

# GDAL's /vsis3 configuration keys set for an image with credentials of its own.
_AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_NON_CACHED = "CPL_VSIL_CURL_NON_CACHED"
_GDAL_DATA = "GDAL_DATA"

# /vsis3 paths now open under credentials of their own, with how many scopes hold each.
_role_paths: Counter[str] = Counter()
_role_paths_lock = threading.Lock()


@dataclass(frozen=True, slots=True, repr=False)
class ReadCredentials:
    """Temporary AWS keys to read one image with; never shown by ``repr``."""

    access_key_id: str
    secret_access_key: str
    session_token: str

    def __repr__(self) -> str:
        return "ReadCredentials(<hidden>)"


def ensure_thread_env() -> None:
    """Enter a rasterio environment for the calling thread if it has none yet."""
    if getattr(_local, "env", None) is None:
        env = rasterio.Env.from_defaults()
        env.__enter__()  # kept for the thread's lifetime on purpose
        _local.env = env


def vsi_path(url: str) -> str | None:
    """The GDAL /vsis3 path of an ``s3://`` URL, None for anything else."""
    return "/vsis3/" + url.removeprefix("s3://") if url.startswith("s3://") else None


@functools.cache
def libgdal() -> ctypes.CDLL | None:
    """The libgdal this process loaded (rasterio's), None if it cannot be found.

    It is found in ``/proc/self/maps`` so that the very GDAL rasterio uses is called, not a
    second copy.
    """
    try:
        maps = Path("/proc/self/maps").read_text().split("\n")
    except OSError:
        maps = []
    paths = {line.split()[-1] for line in maps if "/libgdal" in line}
    return ctypes.CDLL(min(paths)) if paths else None


@functools.cache
def _clear_function() -> Callable[[bytes], None] | None:
    """``VSICurlPartialClearCache`` of rasterio's libgdal (rasterio does not wrap it), if found."""
    gdal = libgdal()
    if gdal is None:
        log.warning("libgdal not found: GDAL's /vsis3 cache cannot be cleared per image")
        return None
    function = gdal.VSICurlPartialClearCache
    function.argtypes = [ctypes.c_char_p]
    function.restype = None
    clear: Callable[[bytes], None] = function
    return clear


def forget_cached(path: str) -> None:
    """Drop what GDAL's process-wide /vsicurl cache holds for ``path`` (a /vsis3 path).

    That cache is keyed by URL, not by credentials: without this, a file GDAL once failed to
    read (403 under the worker's own keys) stays unreadable under a role, and blocks read under
    a role could be served to a reader without it.
    """
    clear = _clear_function()
    if clear is not None:
        clear(path.encode())


def open_unshared(path: str | None) -> None:
    """Before opening ``path`` with the worker's own keys: drop what a role read cached.

    Only needed, and only done, while a handle under credentials of its own has ``path`` open
    in this process (see :func:`holding_path`).
    """
    if path is None or not _role_paths:
        return
    with _role_paths_lock:
        held = _role_paths[path] > 0
    if held:
        forget_cached(path)


@contextmanager
def holding_path(path: str) -> Iterator[None]:
    """Mark ``path`` as open under credentials of its own for the duration of the block."""
    with _role_paths_lock:
        _role_paths[path] += 1
    try:
        yield
    finally:
        with _role_paths_lock:
            _role_paths[path] -= 1
            if _role_paths[path] <= 0:
                del _role_paths[path]


@contextmanager
def image_credentials(credentials: ReadCredentials, path: str) -> Iterator[None]:
    """Make GDAL on this thread use ``credentials`` (for /vsis3 ``path``) until exit.

    The keys are thread-local configuration options, recorded in the thread's rasterio
    environment (so ``rasterio.open`` keeps them instead of looking for keys of its own), and
    restored on exit. ``path`` is marked not to be cached past its handles' lifetime
    (``CPL_VSIL_CURL_NON_CACHED``): its blocks leave GDAL's shared cache when it is closed.

    Why thread-local options: rasterio sets every option with ``CPLSetThreadLocalConfigOption``,
    so other threads (other images, other roles) never see these keys, no ``rasterio.Env`` is
    built per call, and a /vsis3 handle keeps the keys it was opened with for its later reads.
    Path-specific options (``VSISetPathSpecificOption``) are process-wide per path: two jobs on
    one URL under two roles would overwrite each other.
    """
    ensure_thread_env()
    keys = (_NON_CACHED, *_AWS_KEYS)
    saved = {key: value for key, value in rasterio.env.getenv().items() if key in keys}
    rasterio.env.setenv(
        AWS_ACCESS_KEY_ID=credentials.access_key_id,
        AWS_SECRET_ACCESS_KEY=credentials.secret_access_key,
        AWS_SESSION_TOKEN=credentials.session_token,
        CPL_VSIL_CURL_NON_CACHED=path,
    )
    try:
        yield
    finally:
        _restore(saved, keys)


def start_without_nitf_spec() -> None:
    """Make the calling thread, for its lifetime, run GDAL without its NITF specification: a
    thread initializer for threads that only read pixels and write tiles.

    GDAL's NITF driver reads and parses ``nitf_spec.xml`` (about 2 ms, more than writing a
    512 px tile) every time it creates or opens a NITF, to describe TREs and DESs; writing a
    tile and reading pixels need none of it, and the bytes written are the same without it
    (``tests/tiling/test_nitf_spec.py``). ``GDAL_DATA`` is pointed, as a thread-local option,
    at this package's directory, which holds no GDAL data. GDAL settles a thread's data
    directory at its first look-up, so this is for new threads only, never to be undone:
    threads that read an image's metadata (a SICD's DES) keep the specification.
    """
    ensure_thread_env()
    rasterio.env.setenv(**{_GDAL_DATA: str(Path(__file__).parent)})


def _restore(saved: dict[str, object], keys: tuple[str, ...]) -> None:
    """Put ``keys`` of this thread's environment back as ``saved`` has them (absent: unset)."""
    rasterio.env.setenv(**{key: saved[key] for key in keys if key in saved})
    options = rasterio.env.local._env.options  # rasterio offers no unsetenv
    for key in keys:
        if key not in saved:
            options.pop(key, None)
            del_gdal_config(key)
