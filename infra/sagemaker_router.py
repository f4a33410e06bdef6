"""A local stand-in for the SageMaker runtime API, for the local stack.

Answers ``POST /endpoints/<name>/invocations`` (what boto3 and aiobotocore send when
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` points here) by forwarding the body to a model server's
``/invocations``. The endpoint name selects the synthetic model (``model_selection=<name>``)
unless the request's CustomAttributes choose one. Model errors come back as SageMaker does:
424 ``ModelError`` with the model's status, 429 ``ThrottlingException`` for throttling.
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

from models.server import JsonHandler, serve_until_signalled

log = logging.getLogger(__name__)

ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
FORWARD_TIMEOUT_S = 60
THROTTLED = 429
MAX_BODY_BYTES = 256 * 1024 * 1024


class RouterHandler(JsonHandler):
    """Routes invocations to the model server."""

    server: RouterServer

    def do_POST(self) -> None:
        """Forward ``/endpoints/<name>/invocations``."""
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "endpoints" or parts[2] != "invocations":  # noqa: PLR2004
            self._error(404, "UnknownOperationException", f"no route for {self.path}")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self._error(400, "ValidationError", "a request body is required")
            return
        body = self.rfile.read(length)
        attributes = self.headers.get(ATTRIBUTES_HEADER) or ""
        if "model_selection=" not in attributes:
            attributes = ",".join(filter(None, [f"model_selection={parts[1]}", attributes]))
        request = urllib.request.Request(
            self.server.model_url,
            data=body,
            headers={
                "Content-Type": self.headers.get("Content-Type", "application/octet-stream"),
                ATTRIBUTES_HEADER: attributes,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=FORWARD_TIMEOUT_S) as reply:
                self._reply(200, reply.read(), {"x-Amzn-Invoked-Production-Variant": "AllTraffic"})
        except urllib.error.HTTPError as err:
            message = err.read().decode(errors="replace")
            if err.code == THROTTLED:
                self._error(429, "ThrottlingException", message)
            else:
                self._error(424, "ModelError", message, original_status=err.code)
        except OSError as err:
            self._error(424, "ModelError", f"model server unreachable: {err}")

    def _error(self, status: int, code: str, message: str, original_status: int = 0) -> None:
        document = {"__type": code, "message": message}
        if original_status:
            document["OriginalStatusCode"] = str(original_status)
        self._reply(status, json.dumps(document).encode(), {"x-amzn-ErrorType": code})


class RouterServer(ThreadingHTTPServer):
    """Threading server that knows the model server URL."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], model_url: str) -> None:
        """Bind to ``address`` and forward to ``model_url``."""
        super().__init__(address, RouterHandler)
        self.model_url = model_url


def main(argv: list[str] | None = None) -> None:
    """Run the router until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--model-url", default="http://127.0.0.1:8080/invocations")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = RouterServer((args.host, args.port), args.model_url)
    log.info("SageMaker runtime router on http://%s:%d -> %s", args.host, args.port, args.model_url)
    serve_until_signalled(server)


if __name__ == "__main__":
    main()
