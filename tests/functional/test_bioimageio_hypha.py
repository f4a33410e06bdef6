"""The model runner as a Hypha service, through a real local Hypha server.

The server is the local stack's (``python -m hypha.server``), the service a real
``python -m models.bioimageio.hypha_service`` process with three packages, uploads in moto's
S3. Clients use the service as the BioImage.IO Model Runner's reference shows: hypha-rpc,
plain HTTP (curl's calls) and an MCP client.
"""

import ast
import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from hypha_rpc import connect_to_server

from infra.local_stack import LocalStack
from models.bioimageio.samples import write_multi_package, write_sample_package
from tests.functional.helpers import Stack
from tests.functional.test_bioimageio import bright_request, check_bright_objects, running_adapter

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

BUCKET = "hypha-model-runner"
SERVICE = "bioimage-io/services/model-runner"


def npy(array: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def sigmoid(array: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """What the ``bright`` model computes (scale by 1/255, minus 0.5, sigmoid)."""
    return (1 / (1 + np.exp(-(array.astype(np.float64) / 255 - 0.5)))).astype(np.float32)


@pytest.fixture(scope="module")
def hypha(local_stack: LocalStack) -> str:
    return local_stack.start_hypha()


@pytest.fixture(scope="module")
def runner(
    hypha: str, local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The model-runner service joined to the Hypha server; its HTTP base URL."""
    folder = tmp_path_factory.mktemp("packages")
    packages = {
        "bright": write_sample_package(folder / "bright"),
        "multi-in": write_multi_package(folder / "multi-in", "inputs"),
        "multi-out": write_multi_package(folder / "multi-out", "outputs"),
    }
    import boto3  # noqa: PLC0415

    boto3.client("s3", endpoint_url=local_stack.endpoint_url).create_bucket(Bucket=BUCKET)
    args = [sys.executable, "-m", "models.bioimageio.hypha_service", "--server-url", hypha]
    for model_id, path in packages.items():
        args += ["--package", f"{model_id}={path}"]
    args += ["--upload-bucket", BUCKET, "--url-hosts", "127.0.0.1", "--allow-private-urls"]
    env = {
        **os.environ,
        **local_stack.aws_env,
        "MODELRUNNER_BIOIMAGEIO_HYPHA_TOKEN": local_stack.hypha_token,
    }
    log = (folder / "runner.log").open("wb")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"{hypha}/{SERVICE}"
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/search_models").status_code != 200:
            assert process.poll() is None, (folder / "runner.log").read_text()
            assert time.monotonic() < deadline, "the service did not register in 60 s"
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


async def reference_usage(server_url: str) -> dict[str, Any]:
    """The reference's Python usage, as written there."""
    server = await connect_to_server({"server_url": server_url, "method_timeout": 180})
    mr = await server.get_service("bioimage-io/model-runner")
    found = await mr.search_models(keywords=["segmentation"], limit=5)
    image = np.random.default_rng(0).integers(0, 255, (1, 1, 64, 64)).astype(np.float32)
    upload_info = await mr.get_upload_url(file_type=".npy")
    buffer = io.BytesIO()
    np.save(buffer, image.astype(np.float32))
    async with httpx.AsyncClient() as client:
        put = await client.put(upload_info["upload_url"], content=buffer.getvalue())
    by_path = await mr.infer(model_id="bright", inputs=upload_info["file_path"])
    by_array = await mr.infer(model_id="bright", inputs=image)
    rdf = await mr.get_model_rdf(model_id="bright")
    validation = await mr.validate(rdf_dict=rdf)
    report = await mr.test(model_id="bright")
    multi_in = await mr.infer(model_id="multi-in", inputs={"a": image, "b": image})
    multi_out = await mr.infer(model_id="multi-out", inputs=image)
    odd_rdf = await mr.get_model_rdf(model_id="multi-out")
    await server.disconnect()
    return {
        "found": found,
        "image": image,
        "upload_info": upload_info,
        "put": put.status_code,
        "by_path": by_path,
        "by_array": by_array,
        "rdf": rdf,
        "validation": validation,
        "report": report,
        "multi_in": multi_in,
        "multi_out": multi_out,
        "odd_rdf": odd_rdf,
    }


def test_reference_python_usage(hypha: str, runner: str) -> None:
    got = asyncio.run(reference_usage(hypha))
    assert got["found"] == [
        {"model_id": "bright", "description": "Probability that a pixel is bright"}
    ]
    assert got["put"] == 200
    path = got["upload_info"]["file_path"]
    assert path.startswith("temp/")
    assert path.endswith(".npy")
    assert path.count("-") == 4  # a dashed UUID
    expected = sigmoid(got["image"])
    for reply in (got["by_path"], got["by_array"]):
        assert set(reply) == {"output"}
        assert isinstance(reply["output"], np.ndarray)
        np.testing.assert_allclose(reply["output"], expected, atol=1e-6)
    assert got["rdf"]["id"] == "bright"
    assert got["rdf"]["format_version"] == "0.5.4"  # as published, not upgraded
    assert got["validation"]["success"], got["validation"]["details"]
    assert got["report"]["status"] == "passed"
    assert isinstance(got["report"]["details"], str)
    assert "source_name" not in got["report"]["report"]
    np.testing.assert_allclose(got["multi_in"]["sum"], 2 * got["image"])
    assert set(got["multi_out"]) == {"bright", "dark"}
    np.testing.assert_allclose(got["multi_out"]["bright"] + got["multi_out"]["dark"], 1, atol=1e-6)
    limits = got["odd_rdf"]["config"]["limits"]  # RPC carries what JSON cannot
    assert limits["upper"] == float("inf")
    assert np.isnan(limits["unset"])


def test_curl_calls_over_http(runner: str) -> None:
    found = httpx.get(f"{runner}/search_models?keywords=segmentation,test&limit=5")
    assert found.status_code == 200
    assert [m["model_id"] for m in found.json()] == ["bright"]
    assert [m["model_id"] for m in httpx.get(f"{runner}/search_models?limit=50").json()] == [
        "bright",
        "multi-in",
        "multi-out",
    ]
    upload = httpx.get(f"{runner}/get_upload_url?file_type=.npy").json()
    tile = np.full((1, 1, 32, 48), 200, np.float32)
    assert httpx.put(upload["upload_url"], content=npy(tile)).status_code == 200
    reply = httpx.post(
        f"{runner}/infer",
        json={"model_id": "bright", "inputs": upload["file_path"], "return_download_url": True},
    )
    assert reply.status_code == 200, reply.text
    result = np.load(io.BytesIO(httpx.get(reply.json()["output"]).content))
    np.testing.assert_allclose(result, sigmoid(tile), atol=1e-6)
    missing = httpx.get(f"{runner}/get_model_rdf?model_id=nope")
    assert missing.status_code == 404
    assert "no model 'nope'" in missing.json()["detail"]
    no_weights = httpx.post(
        f"{runner}/infer",
        json={"model_id": "bright", "inputs": upload["file_path"], "weights_format": "torchscript"},
    )
    assert no_weights.status_code == 400
    assert "no 'torchscript' weights" in no_weights.json()["detail"]
    odd = httpx.get(f"{runner}/get_model_rdf?model_id=multi-out")
    assert odd.status_code != 200  # JSON cannot carry inf/nan: never nulled silently
    assert "null" not in odd.text


async def mcp_usage(url: str, file_path: str) -> tuple[list[str], Any, Any]:
    # Imported here: starlette (through mcp) warns about python-multipart at import.
    from mcp import ClientSession  # noqa: PLC0415
    from mcp.client.streamable_http import streamablehttp_client  # noqa: PLC0415

    async with (
        streamablehttp_client(url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = [tool.name for tool in (await session.list_tools()).tools]
        found = await session.call_tool("search_models", {"keywords": ["segmentation"]})
        inferred = await session.call_tool(
            "infer", {"model_id": "bright", "inputs": file_path, "return_download_url": True}
        )
    return tools, found, inferred


def test_mcp_tools(hypha: str, runner: str) -> None:
    upload = httpx.get(f"{runner}/get_upload_url?file_type=.npy").json()
    tile = np.full((1, 1, 16, 16), 250, np.float32)
    httpx.put(upload["upload_url"], content=npy(tile))
    tools, found, inferred = asyncio.run(
        mcp_usage(f"{hypha}/bioimage-io/mcp/model-runner/mcp", upload["file_path"])
    )
    assert {"search_models", "get_model_rdf", "get_upload_url", "infer", "test"} <= set(tools)
    assert not found.isError
    assert "bright" in found.content[0].text
    assert not inferred.isError, inferred.content
    # Hypha's MCP bridge answers a dict as its Python text form (not JSON).
    download = ast.literal_eval(inferred.content[0].text)["output"]
    np.testing.assert_allclose(
        np.load(io.BytesIO(httpx.get(download).content)), sigmoid(tile), atol=1e-6
    )


class CountingHandler(BaseHTTPRequestHandler):
    """Serves one .npy file at /tile.npy; /hop redirects to ``server.redirect``."""

    server: "CountingServer"

    def do_GET(self) -> None:
        self.server.connections += 1
        if self.path == "/hop":
            self.send_response(302)
            self.send_header("Location", self.server.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class CountingServer(ThreadingHTTPServer):
    connections = 0
    body = b""
    redirect = ""


@pytest.fixture
def files() -> Iterator[CountingServer]:
    server = CountingServer(("127.0.0.1", 0), CountingHandler)
    server.body = npy(np.full((1, 1, 16, 16), 255, np.float32))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_url_inputs(runner: str, files: CountingServer) -> None:
    port = files.server_address[1]
    reply = httpx.post(
        f"{runner}/infer",
        json={
            "model_id": "bright",
            "inputs": f"http://127.0.0.1:{port}/tile.npy",
            "return_download_url": True,
        },
    )
    assert reply.status_code == 200, reply.text
    assert files.connections == 1
    files.connections = 0
    files.redirect = f"http://localhost:{port}/tile.npy"
    for url, reason in [
        (f"http://localhost:{port}/tile.npy", "not on this server's URL allowlist"),
        (f"ftp://127.0.0.1:{port}/tile.npy", "only http and https"),
        ("http://169.254.169.254/latest/meta-data/x.npy", "not on this server's URL allowlist"),
    ]:
        refused = httpx.post(f"{runner}/infer", json={"model_id": "bright", "inputs": url})
        assert refused.status_code in {400, 403}, refused.text
        assert reason in refused.json()["detail"]
    assert files.connections == 0
    hop = httpx.post(
        f"{runner}/infer", json={"model_id": "bright", "inputs": f"http://127.0.0.1:{port}/hop"}
    )
    assert hop.status_code in {400, 403}
    assert "redirects to another host" in hop.json()["detail"]
    assert files.connections == 1  # the redirect itself; never the other host


def test_modelrunner_job_through_the_hypha_service(
    stack: Stack, runner: str, tmp_path: Path
) -> None:
    """worker -> adapter (remote backend over Hypha RPC) -> model-runner service."""
    with running_adapter(["--remote", runner], tmp_path / "adapter.log") as adapter:
        request = bright_request(stack, tmp_path, f"{adapter}/invocations")
        stack.submit(json.dumps(request))
        check_bright_objects(stack, request["jobId"])
    for feature in stack.result(request["jobId"])["features"]:
        assert feature["properties"]["modelMetadata"]["runner"] == runner
        assert feature["properties"]["modelMetadata"]["transport"] == "rpc"
