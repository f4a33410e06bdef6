"""A worker job against the bioimage.io adapter serving a real model package over HTTP."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from infra.local_stack import free_port, wait_until_up
from tests.functional.helpers import Stack, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM
from tests.models.bioimageio_sample import write_sample_package

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    package = write_sample_package(tmp_path_factory.mktemp("bright"))
    port = free_port()
    log = (tmp_path_factory.mktemp("adapter") / "adapter.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "models.bioimageio", "--port", str(port)),
            *("--package", f"bright={package}", "--weights-format", "onnx"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/ping")
        yield f"{url}/invocations"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert process.returncode == 0


def test_segmentation_model_finds_the_bright_objects(
    stack: Stack, adapter: str, tmp_path: Path
) -> None:
    pixels = np.full((1, 600, 900), 15, dtype=np.uint8)
    pixels[0, 100:140, 200:260] = 240  # inside one tile
    pixels[0, 400:430, 700:720] = 220
    image_url = stack.upload(write_geotiff(tmp_path / "cells.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url,
        imageProcessor={"name": adapter, "type": "HTTP_ENDPOINT"},
        imageProcessorParameters={
            "CustomAttributes": "model=bright,threshold=0.5,min_area=100,class_iri=urn:cell"
        },
        imageProcessorTileSize=512,
        imageProcessorTileOverlap=0,
        imageProcessorTileFormat="GTIFF",
    )
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"])[-1]
    assert final.attributes["status"] == "SUCCESS", final.message
    features = stack.result(request["jobId"])["features"]
    boxes = sorted(f["properties"]["imageBBox"] for f in features)
    assert boxes == [[200, 100, 260, 140], [700, 400, 720, 430]]  # full-image pixels
    for feature in features:
        assert feature["properties"]["featureClasses"][0]["iri"] == "urn:cell"
        assert feature["properties"]["modelMetadata"]["modelId"] == "bright"
        assert feature["geometry"]["type"] == "Polygon"
