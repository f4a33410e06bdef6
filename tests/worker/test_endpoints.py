"""The HTTP endpoint against a real loopback server: status codes, retries, Retry-After."""

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest

from worker.adapters.endpoints import HttpEndpoint, parse_retry_after
from worker.errors import EndpointPermanentError, EndpointRetryableError
from worker.limiter import AimdLimiter

Script = list[tuple[int, dict[str, str], bytes]]


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.script: Script = []
        self.calls: list[dict[str, str]] = []


class ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.calls.append(dict(self.headers))
        status, headers, body = (
            self.server.script.pop(0) if self.server.script else (200, {}, b"ok")
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def invoke(server: ScriptedServer, retries: int = 3, max_reply_bytes: int = 1 << 20) -> bytes:
    async def call() -> bytes:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.server_address[1]}/invocations"
            endpoint = HttpEndpoint(
                session, url, "model_selection=x", 5.0, retries, AimdLimiter(4), max_reply_bytes
            )
            return await endpoint.invoke(b"tile", "image/png")

    return asyncio.run(call())


def test_success_sends_headers(server: ScriptedServer) -> None:
    assert invoke(server) == b"ok"
    (call,) = server.calls
    assert call["X-Amzn-SageMaker-Custom-Attributes"] == "model_selection=x"
    assert call["Content-Type"] == "image/png"


def test_client_error_is_not_retried(server: ScriptedServer) -> None:
    server.script = [(400, {}, b'{"message": "bad tile"}')]
    with pytest.raises(EndpointPermanentError, match=r"HTTP 400.*bad tile"):
        invoke(server)
    assert len(server.calls) == 1


def test_server_errors_are_retried_then_succeed(server: ScriptedServer) -> None:
    server.script = [(503, {}, b"busy"), (500, {}, b"oops")]
    assert invoke(server) == b"ok"
    assert len(server.calls) == 3


def test_retry_budget_is_bounded(server: ScriptedServer) -> None:
    server.script = [(503, {}, b"busy")] * 10
    with pytest.raises(EndpointRetryableError, match="HTTP 503"):
        invoke(server, retries=2)
    assert len(server.calls) == 3


def test_retry_after_is_honoured(server: ScriptedServer) -> None:
    server.script = [(429, {"Retry-After": "0.4"}, b"slow down")] * 2
    started = time.monotonic()
    assert invoke(server) == b"ok"
    assert time.monotonic() - started >= 0.8
    assert len(server.calls) == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("3", 3.0), ("-1", 0.0), ("soon", None)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = parse_retry_after(when)
    assert seconds is not None
    assert 25 < seconds <= 30


def test_reply_size_is_capped(server: ScriptedServer) -> None:
    server.script = [(200, {}, b"x" * 5000)]
    with pytest.raises(EndpointPermanentError, match="reply over the 4096 byte limit"):
        invoke(server, max_reply_bytes=4096)
    server.script = [(200, {}, b"x" * 4096)]
    assert len(invoke(server, max_reply_bytes=4096)) == 4096


def test_redirects_are_not_followed(server: ScriptedServer) -> None:
    server.script = [(302, {"Location": "http://169.254.169.254/latest"}, b"")]
    with pytest.raises(EndpointPermanentError, match="HTTP 302"):
        invoke(server)
    assert len(server.calls) == 1
