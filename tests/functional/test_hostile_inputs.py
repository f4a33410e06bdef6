"""Hostile images and endpoints: each ends FAILED with a clear reason, and the worker goes on."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import Popen
from typing import Any

import numpy as np
import pytest
import rasterio

from infra.local_stack import SAMPLE_IMAGE
from tests.functional.helpers import Stack, own_worker, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


class Listener:
    """A TCP listener on a loopback address that counts the connections it is offered."""

    def __init__(self, host: str) -> None:
        self.socket = socket.create_server((host, 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


class Redirect(BaseHTTPRequestHandler):
    """Answers every POST with a redirect to another host."""

    target = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hostile(stack: Stack) -> Iterator[tuple[Popen[bytes], dict[str, str]]]:
    """A worker of its own whose allowlist also names the metadata address (still refused)."""
    worker, queues = own_worker(
        stack,
        "hostile",
        MODELRUNNER_ENDPOINT_HOSTS="127.0.0.1,169.254.169.254",
        MODELRUNNER_MAX_ATTEMPTS="1",
        MODELRUNNER_TILE_RETRIES="0",
    )
    yield worker, queues
    worker.terminate()
    worker.wait(timeout=30)
    assert worker.returncode == 0


def run(stack: Stack, queues: dict[str, str], request: dict[str, Any]) -> list[Any]:
    stack.sqs.send_message(
        QueueUrl=queues["MODELRUNNER_IMAGE_QUEUE"], MessageBody=json.dumps(request)
    )
    return stack.statuses.wait_terminal(request["jobId"])


def test_hostile_images_fail_clearly_and_the_worker_goes_on(
    stack: Stack, hostile: tuple[Popen[bytes], dict[str, str]], tmp_path: Path
) -> None:
    worker, queues = hostile
    # Declares 100000 x 100000 px, holds almost nothing (sparse): refused from the header.
    huge = tmp_path / "huge.tif"
    profile = {"driver": "GTiff", "width": 100_000, "height": 100_000, "count": 1, "crs": UTM}
    with rasterio.open(
        huge,
        "w",
        **profile,
        transform=TRANSFORM,
        dtype="uint8",
        tiled=True,
        compress="deflate",
        sparse_ok=True,
    ):
        pass
    assert huge.stat().st_size < 5_000_000
    # A GeoTIFF cut in half, and a NITF whose header is overwritten.
    whole = write_geotiff(
        tmp_path / "whole.tif", np.full((1, 512, 512), 9, np.uint8), TRANSFORM, UTM
    )
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    corrupt = tmp_path / "corrupt.ntf"
    data = bytearray(SAMPLE_IMAGE.read_bytes())
    data[9:400] = b"\xff" * 391
    corrupt.write_bytes(bytes(data))
    expected = {
        "huge.tif": "declares 100000 x 100000 px (10.0 gigapixels), more than"
        " MODELRUNNER_MAX_IMAGE_PIXELS",
        "truncated.tif": "IReadBlock failed",
        "corrupt.ntf": "cannot open image",
    }
    for path in (huge, truncated, corrupt):
        request = stack.request(stack.upload(path))
        final = run(stack, queues, request)[-1]
        assert final.attributes["status"] == "FAILED", final.message
        assert expected[path.name] in final.message, final.message
        # Refused while planning, or (the truncated file opens) every tile failed as it was
        # read: either way the request goes to the DLQ.
        assert dead_lettered(stack, queues, request["jobId"]), f"{path.name} not in the DLQ"
        assert worker.poll() is None
    good = stack.request(stack.upload(whole))
    assert run(stack, queues, good)[-1].attributes["status"] == "SUCCESS"


def dead_lettered(stack: Stack, queues: dict[str, str], job_id: str) -> bool:
    """Whether the job's request reaches the DLQ (it goes there just after the status)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        reply = stack.sqs.receive_message(
            QueueUrl=queues["MODELRUNNER_IMAGE_DLQ"],
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            WaitTimeSeconds=1,
        )
        if any(job_id in m["Body"] for m in reply.get("Messages", [])):
            return True
    return False


def test_endpoints_off_the_allowlist_are_never_contacted(
    stack: Stack, hostile: tuple[Popen[bytes], dict[str, str]], tmp_path: Path
) -> None:
    _, queues = hostile
    listener = Listener("127.0.0.2")  # loopback, but not on the worker's allowlist
    redirect = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    Redirect.target = f"http://127.0.0.2:{listener.port}/invocations"
    threading.Thread(target=redirect.serve_forever, daemon=True).start()
    try:
        image_url = stack.upload(
            write_geotiff(tmp_path / "e.tif", np.full((1, 256, 256), 5, np.uint8), TRANSFORM, UTM)
        )
        cases = [
            (f"http://127.0.0.2:{listener.port}/invocations", "host 127.0.0.2 is not an allowed"),
            (
                "http://169.254.169.254/latest/meta-data/",
                "resolves to a link-local/metadata address (169.254.169.254)",
            ),
        ]
        for endpoint, words in cases:
            request = stack.request(
                image_url, imageProcessor={"name": endpoint, "type": "HTTP_ENDPOINT"}
            )
            final = run(stack, queues, request)[-1]
            assert final.attributes["status"] == "FAILED"
            assert words in final.message
        # An allowed endpoint that redirects elsewhere: the redirect is not followed.
        port = redirect.server_address[1]
        request = stack.request(
            image_url,
            imageProcessor={
                "name": f"http://127.0.0.1:{port}/invocations",
                "type": "HTTP_ENDPOINT",
            },
        )
        final = run(stack, queues, request)[-1]
        assert final.attributes["status"] == "FAILED"
        assert "307" in final.message
    finally:
        redirect.shutdown()
        redirect.server_close()
        listener.close()
    assert listener.connections == 0
