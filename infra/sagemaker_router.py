"""A local stand-in for the SageMaker runtime API, for the local stack.

Answers ``POST /endpoints/<name>/invocations`` (what boto3 and aiobotocore send when
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` points here) by forwarding the body to a model server's
``/invocations``. The endpoint name selects the synthetic model (``model_selection=<name>``)
unless the request's CustomAttributes choose one. Errors come back as SageMaker sends them: an
endpoint that does not exist is a 400 ``ValidationError`` ("Endpoint <name> of account ...
not found."), whatever the CustomAttributes say, so a typo in an endpoint name fails locally as
it would on AWS; model errors are a 424 ``ModelError`` with the model's status, throttling a
429 ``ThrottlingException``.

An endpoint exists when its name is one of ``--endpoints`` (the synthetic models by default) or
when the emulator's SageMaker control plane (``--control-plane``) describes it, as for the
endpoints a test creates there.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from models.http import JsonHandler, serve_until_signalled
from models.synthetic import MODELS

log = logging.getLogger(__name__)

ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
FORWARD_TIMEOUT_S = 60
THROTTLED = 429
MAX_BODY_BYTES = 256 * 1024 * 1024
ACCOUNT_ID = "123456789012"


class RouterHandler(JsonHandler):
    """Routes invocations to the model server."""

    server: RouterServer

    def do_POST(self) -> None:
        """Forward ``/endpoints/<name>/invocations``."""
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "endpoints" or parts[2] != "invocations":  # noqa: PLR2004
            self._error(404, "UnknownOperationException", f"no route for {self.path}")
            return
        if not self.server.endpoint_exists(parts[1]):
            self._error(
                400, "ValidationError", f"Endpoint {parts[1]} of account {ACCOUNT_ID} not found."
            )
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
    """Threading server that knows the model server URL and which endpoints exist."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        model_url: str,
        endpoints: frozenset[str] = frozenset(MODELS),
        control_plane: str | None = None,
    ) -> None:
        """Bind to ``address`` and forward to ``model_url`` the calls to ``endpoints`` and to
        the endpoints the SageMaker API at ``control_plane`` (an emulator) describes."""
        super().__init__(address, RouterHandler)
        self.model_url = model_url
        self._known = set(endpoints)
        self._control_plane = control_plane
        self._lock = threading.Lock()

    def endpoint_exists(self, name: str) -> bool:
        """A configured endpoint, or one the control plane describes (remembered once seen)."""
        with self._lock:
            if name in self._known:
                return True
        if self._control_plane is None:
            return False
        client = boto3.client(
            "sagemaker", endpoint_url=self._control_plane, region_name="us-east-1"
        )
        try:
            client.describe_endpoint(EndpointName=name)
        except (ClientError, BotoCoreError) as err:
            log.info("endpoint %s not found: %s", name, err)
            return False
        with self._lock:
            self._known.add(name)
        return True


def main(argv: list[str] | None = None) -> None:
    """Run the router until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--model-url", default="http://127.0.0.1:8080/invocations")
    parser.add_argument(
        "--endpoints",
        default=",".join(sorted(MODELS)),
        help="comma-separated endpoint names that exist (default: the synthetic models)",
    )
    parser.add_argument(
        "--control-plane", help="SageMaker API (an emulator) that knows of other endpoints"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    endpoints = frozenset(n.strip() for n in args.endpoints.split(",") if n.strip())
    server = RouterServer((args.host, args.port), args.model_url, endpoints, args.control_plane)
    log.info("SageMaker runtime router on http://%s:%d -> %s", args.host, args.port, args.model_url)
    serve_until_signalled(server)


if __name__ == "__main__":
    main()
