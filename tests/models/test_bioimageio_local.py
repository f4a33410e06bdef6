"""The local backend runs a real bioimage.io package (ONNX weights) with bioimageio.core."""

from pathlib import Path

import numpy as np
import pytest

from models.bioimageio.adapter import BackendError, Invocation, UnknownModelError, run
from models.bioimageio.local import LocalBackend
from tests.models.bioimageio_sample import write_sample_package

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
    output = backend.predict("bright", pixels)
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
