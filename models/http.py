"""What every model server of this package shares: the SageMaker container contract's HTTP
handler base (keep-alive JSON, ``/ping``), the CustomAttributes header, memory kept for reuse
and a serve-until-signalled loop. Imports no model."""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

log = logging.getLogger(__name__)

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
MAX_TILE_BYTES = 256 * 1024 * 1024


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive JSON handler (GET /ping for health); request lines logged at debug."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and the
    # client's delayed ACK add about 40 ms to every reply.
    disable_nagle_algorithm = True

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Log requests at debug level instead of stderr."""
        log.debug(format, *args)

    def do_GET(self) -> None:
        """Health check."""
        if self.path.rstrip("/") == "/ping":
            self._reply(200, b"{}")
        else:
            self._reply(404, b'{"message": "not found"}')


def parse_custom_attributes(header: str | None) -> dict[str, str]:
    """Parse ``key=value`` pairs separated by commas or semicolons."""
    pairs: dict[str, str] = {}
    for item in (header or "").replace(";", ",").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = value.strip()
    return pairs


# glibc's mallopt parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest M_MMAP_THRESHOLD glibc accepts on 64-bit systems.
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024


def keep_freed_memory(trim_threshold: int = 256 * 1024 * 1024) -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it at once.

    A request handler allocates megabytes of arrays and frees them. By default glibc gives
    large blocks back to the system as they are freed (blocks of 128 KiB and more are mapped
    on their own, and a thread's heap is trimmed when its free top exceeds 128 KiB), so the
    next request faults every page in again: about 1 ms per 512 x 512 tile in the bioimage.io
    adapter's handler threads. With this, blocks up to 32 MiB come from the heap and a heap
    keeps up to ``trim_threshold`` bytes free, so the process holds about its peak working
    set per thread arena. The same as setting ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_`` before the process starts.

    Returns:
        Whether the C library took the settings (False where there is no ``mallopt``, as
        with musl or macOS).
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )


def serve_until_signalled(server: ThreadingHTTPServer) -> None:
    """Serve until SIGTERM or SIGINT, then close the socket."""

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    server.server_close()
