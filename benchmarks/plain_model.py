"""The model server many people write first: Python's ``http.server``, one thread, HTTP/1.0.

``POST /invocations`` reads the tile (it does not decode it) and answers one feature at the
tile's centre; ``GET /ping`` answers 200. Each request is a new connection (HTTP/1.0) and the
listening socket keeps ``socketserver``'s default accept queue of 5 (``--backlog``): a client
with more connection attempts in flight than that sees some dropped, each retried by TCP after
a second.

    python -m benchmarks.plain_model --port 8080 [--tile 512] [--backlog 5] [--sleep-ms 0]
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def reply_for(tile_px: int) -> bytes:
    """One centerpoint feature of a ``tile_px`` tile, as a FeatureCollection."""
    centre = tile_px / 2
    box = [centre - 2, centre - 2, centre + 2, centre + 2]
    feature = {
        "type": "Feature",
        "geometry": None,
        "properties": {
            "imageGeometry": {"type": "Point", "coordinates": [centre, centre]},
            "imageBBox": box,
            "featureClasses": [{"iri": "centerpoint", "score": 1.0}],
        },
    }
    return json.dumps({"type": "FeatureCollection", "features": [feature]}).encode()


def handler_for(body: bytes, sleep_s: float) -> type[BaseHTTPRequestHandler]:
    """A request handler answering every tile with ``body`` after ``sleep_s``."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, payload: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._send(b"{}")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if sleep_s:
                time.sleep(sleep_s)
            self._send(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--backlog", type=int, default=5)
    parser.add_argument("--sleep-ms", type=float, default=0.0)
    args = parser.parse_args()

    class Server(HTTPServer):
        request_queue_size = args.backlog

    handler = handler_for(reply_for(args.tile), args.sleep_ms / 1000)
    Server(("127.0.0.1", args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
