"""The bioimage.io runner adapter: a SageMaker-contract server in front of bioimage.io models.

``GET /ping`` answers 200. ``POST /invocations`` takes a tile (NITF, GTIFF, PNG, JPEG, or a
``.npy`` array), runs the model the ``X-Amzn-SageMaker-Custom-Attributes`` header names on it
through a backend, turns the model's map into objects and answers a ModelRunner
FeatureCollection. Attributes (``key=value``, comma-separated):

``model`` (model id; the server's default when absent), ``output`` (``probability``: threshold
and split into components, the default; ``labels``: the map is a label image), ``channel``
(output channel, 0), ``threshold`` (0.5), ``min_area`` (pixels, 1), ``class_iri``
(``urn:bioimageio:object``), ``geometry`` (``polygon`` or ``bbox``).

Every answer to an invocation carries a ``Server-Timing`` header with the milliseconds the
adapter spent on it by stage: ``decode`` (options and tile), ``predict`` (the backend),
``vectorise`` (objects to features) and ``json`` (the reply's encoding).

This module is the HTTP side; the invocation itself (options, tile, features) is
:mod:`~models.bioimageio.invocation`'s.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson

from models.bioimageio.errors import ApiError, BackendError, UnknownModelError
from models.bioimageio.framing import read_body
from models.bioimageio.invocation import Backend, Invocation, read_tile, run
from models.bioimageio.wire import encode_array
from models.http import (
    CUSTOM_ATTRIBUTES_HEADER,
    MAX_TILE_BYTES,
    JsonHandler,
    parse_custom_attributes,
)

log = logging.getLogger(__name__)

__all__ = [
    "ApiError",
    "Backend",
    "BackendError",
    "UnknownModelError",
]

# The public service's path; the model-runner methods are served below it.
API_PREFIX = "/bioimage-io/services/model-runner"
# Query parameters that are comma-separated lists.
LIST_PARAMETERS = frozenset({"keywords", "additional_requirements"})
MAX_API_BODY_BYTES = 16 * 1024 * 1024
SERVER_TIMING_HEADER = "Server-Timing"
# The API is public data for browser clients too (the public service answers the same).
CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}


def _json_default(value: Any) -> Any:
    """Arrays in API replies go inline (``{"_rtype": "ndarray", ...}``)."""
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    """The JSON body of a reply (orjson: about 5 times as fast as ``json`` on outlines)."""
    return orjson.dumps(reply)


def server_timing(timings: Mapping[str, float]) -> str:
    """A ``Server-Timing`` header value from stage seconds (``name;dur=<milliseconds>``)."""
    return ", ".join(f"{name};dur={1000 * seconds:.3f}" for name, seconds in timings.items())


def parse_server_timing(value: str) -> dict[str, float]:
    """Stage seconds from a ``Server-Timing`` header value (metrics without ``dur`` left out).

    Raises:
        ValueError: If a duration is not a number.
    """
    timings = {}
    for metric in value.split(","):
        name, *parameters = (part.strip() for part in metric.split(";"))
        for parameter in parameters:
            key, _, number = parameter.partition("=")
            if key.strip() == "dur" and name:
                timings[name] = float(number) / 1000
    return timings


class RunnerApi(Protocol):
    """The model-runner methods (``models.bioimageio.runner_api.ModelRunnerApi``)."""

    def call(self, method: str, values: Mapping[str, Any]) -> Any:
        """Run ``method``.

        Raises:
            ApiError: With the HTTP status and the message for the caller.
        """
        ...


class AdapterHandler(JsonHandler):
    """Routes /ping and /invocations to the backend, and the model-runner API's methods
    (``GET <prefix>/<method>?<parameters>`` or ``POST`` with a JSON object) to the API."""

    server: AdapterServer

    def _message(self, status: int, text: str) -> None:
        self._reply(status, json.dumps({"message": text}).encode())

    def _api_method(self) -> str | None:
        """The API method a path names, or None when it is not an API path."""
        path = urlsplit(self.path).path.rstrip("/")
        prefix = self.server.api_prefix.rstrip("/")
        if self.server.api is None or not path.startswith(prefix + "/"):
            return None
        return path[len(prefix) + 1 :]

    def _api_reply(self, status: int, value: Any) -> None:
        if status >= 400:  # noqa: PLR2004
            value = {"success": False, "detail": value}
        try:
            body = json.dumps(value, allow_nan=False, default=_json_default).encode()
        except ValueError as err:
            status = 422
            detail = (
                f"the answer holds values JSON cannot carry ({err}); call this method over"
                " Hypha RPC, or read the model's rdf.yaml"
            )
            body = json.dumps({"success": False, "detail": detail}).encode()
        self._reply(status, body, CORS_HEADERS)

    def do_OPTIONS(self) -> None:
        """CORS preflight for browser clients of the API."""
        headers = {
            **CORS_HEADERS,
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
        }
        self._reply(204 if self._api_method() else 404, b"", headers)

    def _api(self, method: str, values: dict[str, Any]) -> None:
        """Answer an API call: the method's JSON reply, or ``{"success": false, "detail"}``."""
        token = self.server.token
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self._api_reply(401, "a valid bearer token is required (Authorization: Bearer ...)")
            return
        api = self.server.api
        if api is None:
            self._api_reply(404, "this server has no model-runner API")
            return
        try:
            result = api.call(method, values)
        except ApiError as err:
            if err.status >= 500:  # noqa: PLR2004
                log.warning("model-runner %s failed: %s", method, err)
            self._api_reply(err.status, err.message)
            return
        except (ValueError, OSError, RuntimeError, KeyError, TypeError) as err:
            # What a model or bioimageio.core raises past the API's own checks.
            log.exception("model-runner %s failed", method)
            self._api_reply(500, f"{type(err).__name__}: {err}")
            return
        self._api_reply(200, result)

    def do_GET(self) -> None:
        """Health check, or an API call with query parameters."""
        method = self._api_method()
        if method is None:
            super().do_GET()
            return
        values: dict[str, Any] = {}
        for name, items in parse_qs(urlsplit(self.path).query).items():
            value = items[-1]
            values[name] = value.split(",") if name in LIST_PARAMETERS else value
        self._api(method, values)

    def _post_api(self, method: str) -> None:
        try:
            values = json.loads(read_body(self.rfile, self.headers, MAX_API_BODY_BYTES) or b"{}")
        except ApiError as err:
            self.close_connection = True
            self._api_reply(err.status, err.message)
            return
        except ValueError as err:
            self._api_reply(400, f"the body is not JSON: {err}")
            return
        if not isinstance(values, dict):
            self._api_reply(400, "the body must be a JSON object of parameters")
            return
        self._api(method, values)

    def do_POST(self) -> None:
        """Run a model on the posted tile, or an API call with a JSON object body."""
        method = self._api_method()
        if method is not None:
            self._post_api(method)
            return
        if self.path.rstrip("/") != "/invocations":
            self._message(404, "not found")
            return
        try:
            body = read_body(self.rfile, self.headers, MAX_TILE_BYTES, required="a tile body")
        except ApiError as err:
            self.close_connection = True
            self._message(err.status, err.message)
            return
        began = time.perf_counter()
        try:
            attributes = parse_custom_attributes(self.headers.get(CUSTOM_ATTRIBUTES_HEADER))
            invocation = Invocation.from_attributes(attributes, self.server.default_model)
            tile = read_tile(body)
        except ValueError as err:
            self._message(400, str(err))
            return
        timings = {"decode": time.perf_counter() - began}
        try:
            reply = run(self.server.backend, invocation, tile, timings)
        except UnknownModelError as err:
            self._message(404, f"unknown model {invocation.model!r}: {err}")
            return
        except BackendError as err:
            log.warning("model %s failed: %s", invocation.model, err)
            self._message(500, f"model {invocation.model} failed: {err}")
            return
        encoding = time.perf_counter()
        payload = encode_reply(reply)
        timings["json"] = time.perf_counter() - encoding
        self._reply(200, payload, {SERVER_TIMING_HEADER: server_timing(timings)})


class AdapterServer(ThreadingHTTPServer):
    """Threading HTTP server with a backend and a default model id."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        backend: Backend,
        default_model: str,
        api: RunnerApi | None = None,
        api_prefix: str = API_PREFIX,
        token: str | None = None,
    ) -> None:
        """Bind to ``address``; requests without ``model`` use ``default_model``.

        With ``api``, its methods are served under ``api_prefix``; with ``token``, API calls
        need ``Authorization: Bearer <token>``.
        """
        super().__init__(address, AdapterHandler)
        self.backend = backend
        self.default_model = default_model
        self.api = api
        self.api_prefix = api_prefix
        self.token = token
