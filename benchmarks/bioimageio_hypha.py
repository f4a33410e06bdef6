"""Overhead of the model runner's transports through a local Hypha server.

``python -m benchmarks.bioimageio_hypha [--repeats N]`` starts the local stack (moto for the
uploads), a local Hypha server and the model-runner service with the ``bright`` sample package,
and times a 512 x 512 single-channel float32 ``infer``:

- Hypha RPC, array in and out, with this project's connection (no websocket compression)
  and with a stock hypha-rpc client (permessage-deflate on);
- HTTP: ``get_upload_url``, PUT, ``infer`` with ``return_download_url``, GET the result;
- MCP: the same upload, the ``infer`` tool with the file path, GET the result.

Overhead is the median round trip minus the median prediction (the same array through the
local backend in this process). Also prints the Hypha server's resident memory.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import numpy.typing as npt
from hypha_rpc import connect_to_server

from infra.local_stack import LocalStack
from models.bioimageio.hypha_link import connect
from models.bioimageio.local import LocalBackend
from models.bioimageio.samples import write_sample_package

BUCKET = "bench-model-runner"
SIZE = 512


def npy(array: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


async def timed(call: Callable[[], Awaitable[Any]], repeats: int) -> float:
    """Median seconds of ``call`` after two warm-up calls."""
    for _ in range(2):
        await call()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        await call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def over_http(client: httpx.AsyncClient, base: str, data: bytes) -> None:
    upload = (await client.get(f"{base}/get_upload_url", params={"file_type": ".npy"})).json()
    (await client.put(upload["upload_url"], content=data)).raise_for_status()
    reply = await client.post(
        f"{base}/infer",
        json={"model_id": "bright", "inputs": upload["file_path"], "return_download_url": True},
    )
    reply.raise_for_status()
    np.load(io.BytesIO((await client.get(reply.json()["output"])).content))


async def measure(hypha: str, array: npt.NDArray[np.float32], repeats: int) -> dict[str, float]:
    from mcp import ClientSession  # noqa: PLC0415  (starlette warns at import)
    from mcp.client.streamable_http import streamablehttp_client  # noqa: PLC0415

    results = {}
    plain = await connect(hypha)
    service = await plain.get_service("bioimage-io/model-runner")
    results["rpc"] = await timed(lambda: service.infer(model_id="bright", inputs=array), repeats)
    stock = await connect_to_server({"server_url": hypha})
    stock_service = await stock.get_service("bioimage-io/model-runner")
    results["rpc, stock client"] = await timed(
        lambda: stock_service.infer(model_id="bright", inputs=array), repeats
    )
    data = npy(array)
    base = f"{hypha}/bioimage-io/services/model-runner"
    async with httpx.AsyncClient(timeout=120) as client:
        results["http"] = await timed(lambda: over_http(client, base, data), repeats)
        trivial = await timed(lambda: client.get(f"{base}/search_models"), repeats)
        results["trivial http call"] = trivial
        async with (
            streamablehttp_client(f"{hypha}/bioimage-io/mcp/model-runner/mcp") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()

            async def over_mcp() -> None:
                upload = (await client.get(f"{base}/get_upload_url?file_type=.npy")).json()
                await client.put(upload["upload_url"], content=data)
                reply = await session.call_tool(
                    "infer",
                    {
                        "model_id": "bright",
                        "inputs": upload["file_path"],
                        "return_download_url": True,
                    },
                )
                text = getattr(reply.content[0], "text", "")  # Hypha answers Python text
                url = ast.literal_eval(text)["output"]
                np.load(io.BytesIO((await client.get(url)).content))

            results["mcp"] = await timed(over_mcp, repeats)
    results["trivial rpc call"] = await timed(service.search_models, repeats)
    await plain.disconnect()
    await stock.disconnect()
    return results


def prediction_s(package: Path, array: npt.NDArray[np.float32], repeats: int) -> float:
    backend = LocalBackend({"bright": str(package)}, "onnx")
    for _ in range(2):
        backend.predict_tensors("bright", {"input": array})
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        backend.predict_tensors("bright", {"input": array})
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-hypha-"))
    package = write_sample_package(work / "bright")
    array = np.random.default_rng(0).random((1, 1, SIZE, SIZE), dtype=np.float32) * 255
    with LocalStack(work / "logs") as stack:
        hypha = stack.start_hypha()
        boto3.client("s3", endpoint_url=stack.endpoint_url).create_bucket(Bucket=BUCKET)
        service = subprocess.Popen(
            [
                *(sys.executable, "-m", "models.bioimageio.hypha_service"),
                *("--server-url", hypha, "--package", f"bright={package}"),
                *("--upload-bucket", BUCKET),
            ],
            env={
                **os.environ,
                **stack.aws_env,
                "MODELRUNNER_BIOIMAGEIO_HYPHA_TOKEN": stack.hypha_token,
            },
            stdout=(work / "logs" / "runner.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"{hypha}/bioimage-io/services/model-runner"
            while httpx.get(f"{base}/search_models").status_code != 200:
                time.sleep(0.3)
            results = asyncio.run(measure(hypha, array, args.repeats))
            assert stack.hypha_process is not None
            server_rss = rss_mib(stack.hypha_process.pid)
        finally:
            service.terminate()
            service.wait(30)
    predict = prediction_s(package, array, args.repeats)
    print(f"512 x 512 float32 infer, median of {args.repeats}; prediction {predict * 1000:.1f} ms")
    for name, seconds in results.items():
        overhead = seconds if name.startswith("trivial") else seconds - predict
        print(
            f"  {name:<20} round trip {seconds * 1000:7.1f} ms   overhead {overhead * 1000:7.1f} ms"
        )
    print(f"Hypha server RSS: {server_rss:.0f} MiB")


if __name__ == "__main__":
    main()
