"""A worker job against the bioimage.io adapter serving a real model package over HTTP."""

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.local_stack import free_port, wait_until_up
from models.bioimageio.adapter import API_PREFIX
from models.bioimageio.samples import write_sample_package
from tests.functional.helpers import Stack, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


@contextmanager
def running_adapter(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """An adapter process started with ``args``; its base URL."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "models.bioimageio", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/ping")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert process.returncode == 0


def local_model(package: str) -> list[str]:
    """Adapter arguments serving ``package`` as model ``bright``."""
    return ["--package", f"bright={package}", "--weights-format", "onnx"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    package = write_sample_package(tmp_path_factory.mktemp("bright"))
    log_path = tmp_path_factory.mktemp("adapter") / "adapter.log"
    with running_adapter(local_model(str(package)), log_path) as url:
        yield f"{url}/invocations"


def bright_request(stack: Stack, tmp_path: Path, endpoint: str) -> dict[str, Any]:
    pixels = np.full((1, 600, 900), 15, dtype=np.uint8)
    pixels[0, 100:140, 200:260] = 240  # inside one tile
    pixels[0, 400:430, 700:720] = 220
    image_url = stack.upload(write_geotiff(tmp_path / "cells.tif", pixels, TRANSFORM, UTM))
    return stack.request(
        image_url,
        imageProcessor={"name": endpoint, "type": "HTTP_ENDPOINT"},
        imageProcessorParameters={
            "CustomAttributes": "model=bright,threshold=0.5,min_area=100,class_iri=urn:cell"
        },
        imageProcessorTileSize=512,
        imageProcessorTileOverlap=0,
        imageProcessorTileFormat="GTIFF",
    )


def test_segmentation_model_finds_the_bright_objects(
    stack: Stack, adapter: str, tmp_path: Path
) -> None:
    request = bright_request(stack, tmp_path, adapter)
    stack.submit(json.dumps(request))
    check_bright_objects(stack, request["jobId"])


def check_bright_objects(stack: Stack, job_id: str) -> None:
    final = stack.statuses.wait_terminal(job_id)[-1]
    assert final.attributes["status"] == "SUCCESS", final.message
    features = stack.result(job_id)["features"]
    boxes = sorted(f["properties"]["imageBBox"] for f in features)
    assert boxes == [[200, 100, 260, 140], [700, 400, 720, 430]]  # full-image pixels
    for feature in features:
        assert feature["properties"]["featureClasses"][0]["iri"] == "urn:cell"
        assert feature["properties"]["modelMetadata"]["modelId"] == "bright"
        assert feature["geometry"]["type"] == "Polygon"


def test_models_on_a_remote_model_runner(stack: Stack, tmp_path: Path) -> None:
    """worker -> adapter (remote backend) -> model-runner API (asynchronous infer) -> S3."""
    package = write_sample_package(tmp_path / "package")
    stack.s3.create_bucket(Bucket="model-runner-uploads")
    runner_args = [*local_model(str(package)), "--api-bucket", "model-runner-uploads"]
    runner_env = {**stack.local.aws_env, "MODELRUNNER_BIOIMAGEIO_API_TOKEN": "t0ken"}
    adapter_env = {"MODELRUNNER_BIOIMAGEIO_REMOTE_TOKEN": "t0ken"}
    with (
        running_adapter(
            [*runner_args, "--async-infer"], tmp_path / "runner.log", runner_env
        ) as runner,
        running_adapter(
            ["--remote", f"{runner}{API_PREFIX}"], tmp_path / "adapter.log", adapter_env
        ) as adapter,
    ):
        request = bright_request(stack, tmp_path, f"{adapter}/invocations")
        stack.submit(json.dumps(request))
        check_bright_objects(stack, request["jobId"])
    for feature in stack.result(request["jobId"])["features"]:
        assert feature["properties"]["modelMetadata"]["runner"] == f"{runner}{API_PREFIX}"


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_package_from_s3(stack: Stack, tmp_path: Path, layout: str) -> None:
    folder = write_sample_package(tmp_path / "package").parent
    bucket = stack.local.resources.image_bucket
    prefix = f"models/{layout}"
    if layout == "zip":
        archive = tmp_path / "bright.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in folder.iterdir():
                zipped.write(path, path.name)
        stack.s3.upload_file(str(archive), bucket, f"{prefix}/bright.zip")
        source = f"s3://{bucket}/{prefix}/bright.zip"
    else:
        for path in folder.iterdir():
            stack.s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")
        source = f"s3://{bucket}/{prefix}/"
    with running_adapter(local_model(source), tmp_path / "adapter.log", stack.local.aws_env) as url:
        request = bright_request(stack, tmp_path, f"{url}/invocations")
        stack.submit(json.dumps(request))
        final = stack.statuses.wait_terminal(request["jobId"])[-1]
    assert final.attributes["status"] == "SUCCESS", final.message
    assert len(stack.result(request["jobId"])["features"]) == 2
