"""HTTP server with the SageMaker container contract serving the synthetic models.

``GET /ping`` answers 200; ``POST /invocations`` decodes the tile (NITF, GTIFF, PNG, JPEG) and
runs the model chosen by ``model_selection`` in the ``X-Amzn-SageMaker-Custom-Attributes``
header (default: the server's ``--model``).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from models.synthetic import (
    MODELS,
    THROTTLED,
    parse_custom_attributes,
    retry_after_header,
)
from tiling.encode import decode_tile
from tiling.errors import TilingError

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


class ModelHandler(JsonHandler):
    """Routes /ping and /invocations."""

    server: ModelServer

    def do_POST(self) -> None:
        """Run a model on the posted tile."""
        if self.path.rstrip("/") != "/invocations":
            self._reply(404, b'{"message": "not found"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_TILE_BYTES:
            self._reply(400, b'{"message": "a tile body is required"}')
            return
        body = self.rfile.read(length)
        attributes = parse_custom_attributes(self.headers.get(CUSTOM_ATTRIBUTES_HEADER))
        name = attributes.get("model_selection", self.server.default_model)
        model = MODELS.get(name)
        if model is None:
            self._reply(400, f'{{"message": "unknown model_selection {name!r}"}}'.encode())
            return
        try:
            tile = decode_tile(body)
        except TilingError as err:
            self._reply(400, f'{{"message": "cannot decode tile: {err}"}}'.encode())
            return
        status, reply = model(tile, attributes)
        headers = {"Retry-After": retry_after_header(attributes)} if status == THROTTLED else {}
        self._reply(status, reply, headers)


class ModelServer(ThreadingHTTPServer):
    """Threading HTTP server that knows its default model."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], default_model: str) -> None:
        """Bind to ``address``; ``default_model`` answers requests without model_selection."""
        super().__init__(address, ModelHandler)
        self.default_model = default_model


def main(argv: list[str] | None = None) -> None:
    """Run the model server until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model", default="centerpoint", choices=sorted(MODELS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = ModelServer((args.host, args.port), args.model)
    log.info("model server on http://%s:%d (default model %s)", args.host, args.port, args.model)
    serve_until_signalled(server)


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


if __name__ == "__main__":
    main()
