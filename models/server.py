"""HTTP server with the SageMaker container contract serving the synthetic models.

``GET /ping`` answers 200; ``POST /invocations`` decodes the tile (NITF, GTIFF, PNG, JPEG) and
runs the model chosen by ``model_selection`` in the ``X-Amzn-SageMaker-Custom-Attributes``
header (default: the server's ``--model``).
"""

from __future__ import annotations

import argparse
import logging
from http.server import ThreadingHTTPServer

from models.http import (
    CUSTOM_ATTRIBUTES_HEADER,
    MAX_TILE_BYTES,
    JsonHandler,
    parse_custom_attributes,
    serve_until_signalled,
)
from models.synthetic import MODELS, THROTTLED, retry_after_header
from tiling.encode import decode_tile
from tiling.errors import TilingError

log = logging.getLogger(__name__)


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


if __name__ == "__main__":
    main()
