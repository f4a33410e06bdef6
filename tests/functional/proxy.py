"""A forwarding HTTP proxy in front of the emulator that can stop one chosen call halfway.

A worker pointed at it (``AWS_ENDPOINT_URL_<SERVICE>``) works as usual until the call a test
chose arrives: the proxy then holds it (after passing it on, or before) and never answers, so
the test knows the worker is stuck exactly there and can kill it at that step.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Match = Callable[[str, dict[str, str], bytes], bool]


class HoldingProxy:
    """Forwards to ``target``; holds the ``nth`` call that ``match`` accepts."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.match: Match = lambda path, headers, body: False
        self.nth = 1
        self.forward_held = True  # pass the held call on before holding it
        self.held = threading.Event()
        self.release = threading.Event()
        self._seen = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        """Where to point a worker."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def hold(self, match: Match, nth: int = 1, forward: bool = True) -> None:
        """Hold the ``nth`` call ``match`` accepts (after passing it on if ``forward``)."""
        with self._lock:
            self.match, self.nth, self.forward_held, self._seen = match, nth, forward, 0

    def _should_hold(self, path: str, headers: dict[str, str], body: bytes) -> bool:
        with self._lock:
            if self.held.is_set() or not self.match(path, headers, body):
                return False
            self._seen += 1
            return self._seen == self.nth

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        host = self.target.hostname or "127.0.0.1"
        connection = http.client.HTTPConnection(host, self.target.port, timeout=60)
        try:
            connection.request(method, path, body, headers)
            reply = connection.getresponse()
            return reply.status, reply.getheaders(), reply.read()
        finally:
            connection.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                del args

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                if proxy._should_hold(self.path, headers, body):
                    if proxy.forward_held:
                        proxy._forward("POST", self.path, headers, body)
                    proxy.held.set()
                    proxy.release.wait(300)
                    return  # no answer: the connection just closes
                status, reply_headers, reply = proxy._forward("POST", self.path, headers, body)
                self.send_response(status)
                for name, value in reply_headers:
                    if name.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST

        return Handler

    @contextmanager
    def running(self) -> Iterator[HoldingProxy]:
        """Serve until the block ends."""
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
