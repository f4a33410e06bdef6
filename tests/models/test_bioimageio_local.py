"""The local backend runs a real bioimage.io package (ONNX weights) with bioimageio.core."""

import io
import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from models.bioimageio.adapter import AdapterServer, BackendError, UnknownModelError
from models.bioimageio.invocation import Invocation, run
from models.bioimageio.local import LocalBackend
from models.bioimageio.samples import conv_reference, write_sample_package
from tiling.encode import encode_tile
from worker.contract.messages import VALID_PAIRS

# bioimageio.spec leaves the package's files open when it loads one (a ResourceWarning raised
# at garbage collection); that is its leak, once per model load, not this code's.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> LocalBackend:
    package = write_sample_package(tmp_path_factory.mktemp("bright"))
    return LocalBackend({"bright": str(package)}, "onnx")


def expected(pixels: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(pixels.astype(np.float64) / 255 - 0.5)))


@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 300, 517), (1, 7, 9), (3, 100, 120)])
def test_any_tile_size_gives_the_model_output(
    backend: LocalBackend, shape: tuple[int, int, int]
) -> None:
    pixels = np.random.default_rng(1).integers(0, 255, shape).astype(np.uint8)
    output = backend.predict("bright", pixels)
    assert output.shape == (1, *shape[1:])
    # Several bands go to a one-channel model as their mean.
    reference = expected(pixels.mean(axis=0, keepdims=True))
    assert np.abs(output - reference).max() < 1e-5


def test_large_tiles_go_block_by_block(backend: LocalBackend) -> None:
    pixels = np.random.default_rng(2).integers(0, 255, (1, 700, 650)).astype(np.uint8)
    output = backend.predict("bright", pixels, blocksize=4)  # blocks of 80 px
    assert np.abs(output - expected(pixels)).max() < 1e-5


def test_objects_from_the_real_model(backend: LocalBackend) -> None:
    pixels = np.full((1, 128, 128), 20, dtype=np.uint8)
    pixels[0, 10:30, 40:70] = 230
    pixels[0, 90:100, 5:15] = 200
    reply = run(backend, Invocation(model="bright", min_area=50), pixels)
    boxes = sorted(f["properties"]["imageBBox"] for f in reply["features"])
    assert boxes == [[5, 90, 15, 100], [40, 10, 70, 30]]
    metadata = reply["features"][0]["properties"]["modelMetadata"]
    assert metadata == {"modelId": "bright", "modelName": "bright-objects", "weightsFormat": "onnx"}


def test_errors_are_named(backend: LocalBackend, tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="known models: bright"):
        backend.predict("other", np.zeros((1, 16, 16), np.uint8))
    broken = LocalBackend({"broken": str(tmp_path / "missing" / "rdf.yaml")})
    with pytest.raises(BackendError, match="cannot load model package"):
        broken.predict("broken", np.zeros((1, 16, 16), np.uint8))


def test_tiled_prediction_equals_whole_image(backend: LocalBackend) -> None:
    pixels = np.random.default_rng(3).integers(0, 255, (1, 200, 150)).astype(np.uint8)
    whole = backend.predict("bright", pixels, blocksize=64)  # one block
    tiled = backend.predict("bright", pixels, blocksize=1)  # blocks of 32 px
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def disc_tile() -> tuple[np.ndarray, list[list[int]]]:
    """A 3-band 256 x 256 tile with 6 bright discs, and each disc's pixel box."""
    yy, xx = np.mgrid[:256, :256]
    pixels = np.full((3, 256, 256), 25, dtype=np.uint8)
    boxes = []
    for cy, cx, r in [(30, 40, 12), (60, 200, 20), (128, 128, 9), (200, 50, 15), (230, 220, 10)]:
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        pixels[:, disc] = 235
        ys, xs = np.nonzero(disc)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
    pixels[:, 100:104, 10:40] = 240  # a bar, not a disc: still one object
    boxes.append([10, 100, 40, 104])
    return pixels, sorted(boxes)


PAIRS = [*VALID_PAIRS, ("npy", "NONE")]


@pytest.mark.parametrize(("tile_format", "compression"), PAIRS)
def test_the_adapter_finds_the_discs_in_every_tile_format(
    backend: LocalBackend, tile_format: str, compression: str
) -> None:
    pixels, truth = disc_tile()
    if tile_format == "npy":
        buffer = io.BytesIO()
        np.save(buffer, pixels)
        body = buffer.getvalue()
    else:
        body = encode_tile(pixels, tile_format, compression)
    server = AdapterServer(("127.0.0.1", 0), backend, "bright")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_address[1]}/invocations",
            data=body,
            headers={"X-Amzn-SageMaker-Custom-Attributes": "min_area=20"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            features = json.loads(reply.read())["features"]
    finally:
        server.shutdown()
        server.server_close()
    found = sorted(f["properties"]["imageBBox"] for f in features)
    assert len(found) == len(truth)
    for box, expected_box in zip(found, truth, strict=True):
        assert max(abs(a - b) for a, b in zip(box, expected_box, strict=True)) <= 1, (
            box,
            expected_box,
        )


@pytest.fixture(scope="module")
def conv_backend(tmp_path_factory: pytest.TempPathFactory) -> LocalBackend:
    package = write_sample_package(tmp_path_factory.mktemp("conv"), "conv")
    return LocalBackend({"conv": str(package)}, "onnx")


def test_the_convolutional_package_gives_its_reference_output(conv_backend: LocalBackend) -> None:
    pixels = np.random.default_rng(4).integers(0, 255, (1, 200, 150)).astype(np.uint8)
    reference = conv_reference(pixels[np.newaxis].astype(np.float32) / np.float32(255))[0]
    whole = conv_backend.predict("conv", pixels, blocksize=64)
    # Within the halo of the edges bioimageio.core pads the input its own way, the reference
    # with zeros (as the ONNX graph does); inside, the output is the network's.
    np.testing.assert_allclose(whole[:, 2:-2, 2:-2], reference[:, 2:-2, 2:-2], atol=1e-5)
    # Blocks of 32 px with the declared halo of 2 px: the same output.
    tiled = conv_backend.predict("conv", pixels, blocksize=1)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_the_convolutional_package_finds_the_discs(conv_backend: LocalBackend) -> None:
    pixels, truth = disc_tile()
    reply = run(conv_backend, Invocation(model="conv", min_area=20), pixels)
    boxes = sorted(f["properties"]["imageBBox"] for f in reply["features"])
    assert len(boxes) == len(truth)
    assert np.abs(np.array(boxes) - np.array(truth)).max() <= 1


def test_the_convolutional_package_passes_the_bioimageio_test_suite(tmp_path: Path) -> None:
    from bioimageio.core import test_model  # noqa: PLC0415  (heavy; only this test)

    summary = test_model(write_sample_package(tmp_path, "conv"), weight_format="onnx")
    assert summary.status == "passed", summary.format()
