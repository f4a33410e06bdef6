"""GDAL reads served by Python byte sources: a GDAL virtual file system plugin through ctypes.

A :class:`ByteSource` registered here gets a GDAL path (``/vsimodelrunner/<id>/<name>``) that
any GDAL driver opens like a file; its reads call ``source.read_into`` on the reading thread,
which copies the bytes straight into GDAL's buffer. This is how GDAL decodes an image whose
bytes were fetched ahead of it (see :mod:`worker.readahead`).

Why not rasterio's ``opener=`` (1.4): it keeps its open files in context variables of the
thread that opened them; a handle opened on one thread and closed on another (which the
worker's encoder threads do) crashed the process here. The plugin callbacks hold the GIL while
they run; an exception cannot cross into GDAL, so a callback that fails reports a short read
(GDAL then fails the read, which rasterio raises) and logs why.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import platform
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from tiling.gdalenv import libgdal

log = logging.getLogger(__name__)

PREFIX = "/vsimodelrunner/"

# struct stat: st_size is at 48 on x86_64 and aarch64 Linux, st_mode at 24 and 16.
_STAT_OFFSETS = {"x86_64": (24, 48), "aarch64": (16, 48)}

_Stat = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int
)
_Open = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)
_Tell = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)
_Seek = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int)
_Read = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t
)
_Eof = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_Close = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _Callbacks(ctypes.Structure):
    """The leading fields of GDAL's ``VSIFilesystemPluginCallbacksStruct`` (cpl_vsi.h); GDAL
    allocates the whole struct, zeroed, so later fields stay unset."""

    _fields_ = [
        ("user_data", ctypes.c_void_p),
        ("stat", ctypes.c_void_p),
        ("unlink", ctypes.c_void_p),
        ("rename", ctypes.c_void_p),
        ("mkdir", ctypes.c_void_p),
        ("rmdir", ctypes.c_void_p),
        ("read_dir", ctypes.c_void_p),
        ("open", ctypes.c_void_p),
        ("tell", ctypes.c_void_p),
        ("seek", ctypes.c_void_p),
        ("read", ctypes.c_void_p),
        ("read_multi_range", ctypes.c_void_p),
        ("get_range_status", ctypes.c_void_p),
        ("eof", ctypes.c_void_p),
        ("write", ctypes.c_void_p),
        ("flush", ctypes.c_void_p),
        ("truncate", ctypes.c_void_p),
        ("close", ctypes.c_void_p),
        ("buffer_size", ctypes.c_size_t),
        ("cache_size", ctypes.c_size_t),
    ]


class ByteSource(Protocol):
    """The bytes of one file, served to GDAL."""

    @property
    def size(self) -> int:
        """The file's length in bytes."""
        ...

    def read_into(self, offset: int, length: int, address: int) -> int:
        """Copy bytes ``offset`` to ``offset + length`` (clipped to the file) to ``address``;
        return how many were copied. May block until the bytes are there.

        Raises:
            OSError: If the bytes cannot be had.
        """
        ...


@dataclass(slots=True)
class _Handle:
    source: ByteSource
    position: int = 0


_sources: dict[str, ByteSource] = {}
_handles: dict[int, _Handle] = {}
_ids = itertools.count(1)
_install_lock = threading.Lock()
_installed: list[Any] = []  # the callbacks, kept alive for the process's lifetime


def _source_of(path: bytes) -> ByteSource | None:
    """The source of a callback's path (GDAL strips the prefix: ``<id>/<name>``), None for
    anything else (a side-car file GDAL looks for, a directory)."""
    return _sources.get(os.fsdecode(path).removeprefix(PREFIX))


def _stat(_user: int, path: bytes, buffer: int, _flags: int) -> int:
    source = _source_of(path)
    offsets = _STAT_OFFSETS.get(platform.machine())
    if source is None or offsets is None:
        return -1
    mode_at, size_at = offsets
    ctypes.c_uint32.from_address(buffer + mode_at).value = stat.S_IFREG | 0o444
    ctypes.c_int64.from_address(buffer + size_at).value = source.size
    return 0


def _open(_user: int, path: bytes, access: bytes) -> int | None:
    source = _source_of(path)
    if source is None or b"w" in access or b"+" in access:
        return None
    handle = next(_ids)
    _handles[handle] = _Handle(source)
    return handle


def _tell(handle: int) -> int:
    return _handles[handle].position


def _seek(handle: int, offset: int, whence: int) -> int:
    state = _handles[handle]
    if whence == os.SEEK_SET:
        state.position = offset
    elif whence == os.SEEK_CUR:
        state.position += offset
    else:
        state.position = state.source.size + offset
    return 0


def _read(handle: int, buffer: int, size: int, count: int) -> int:
    state = _handles[handle]
    if size == 0 or count == 0:
        return 0
    try:
        copied = state.source.read_into(state.position, size * count, buffer)
    except OSError as err:  # a ByteSource's one failure; a short read fails GDAL's read
        log.warning("read of %d bytes at %d failed: %s", size * count, state.position, err)
        return 0
    state.position += copied
    return copied // size


def _eof(handle: int) -> int:
    state = _handles[handle]
    return int(state.position >= state.source.size)


def _close(handle: int) -> int:
    _handles.pop(handle, None)
    return 0


def _install() -> None:
    """Install the plugin once per process.

    Raises:
        OSError: If the GDAL library cannot be found or refuses the plugin.
    """
    with _install_lock:
        if _installed:
            return
        gdal = libgdal()
        if gdal is None:
            raise OSError("libgdal not found: cannot serve prefetched bytes to GDAL")
        gdal.VSIAllocFilesystemPluginCallbacksStruct.restype = ctypes.POINTER(_Callbacks)
        gdal.VSIInstallPluginHandler.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Callbacks)]
        gdal.VSIInstallPluginHandler.restype = ctypes.c_int
        gdal.VSIFreeFilesystemPluginCallbacksStruct.argtypes = [ctypes.POINTER(_Callbacks)]
        callbacks = [
            _Stat(_stat),
            _Open(_open),
            _Tell(_tell),
            _Seek(_seek),
            _Read(_read),
            _Eof(_eof),
            _Close(_close),
        ]
        struct = gdal.VSIAllocFilesystemPluginCallbacksStruct()
        for name, callback in zip(
            ("stat", "open", "tell", "seek", "read", "eof", "close"), callbacks, strict=True
        ):
            setattr(struct.contents, name, ctypes.cast(callback, ctypes.c_void_p).value)
        struct.contents.buffer_size = 0
        struct.contents.cache_size = 0
        # GDAL keeps the prefix pointer, not a copy: the buffer lives as long as the process.
        prefix = ctypes.create_string_buffer(PREFIX.encode())
        status = gdal.VSIInstallPluginHandler(ctypes.cast(prefix, ctypes.c_char_p), struct)
        gdal.VSIFreeFilesystemPluginCallbacksStruct(struct)
        if status != 0:
            raise OSError(f"GDAL refused the {PREFIX} file system plugin")
        _installed.extend([prefix, *callbacks])


@contextmanager
def serving(source: ByteSource, name: str) -> Iterator[str]:
    """Make ``source`` readable by GDAL as the returned path until the block exits.

    ``name`` is the file name GDAL sees (keep the image's, drivers look at the extension).

    Raises:
        OSError: If the plugin cannot be installed.
    """
    _install()
    key = f"s{next(_ids)}/{os.path.basename(name) or 'image'}"
    _sources[key] = source
    try:
        yield PREFIX + key
    finally:
        del _sources[key]
