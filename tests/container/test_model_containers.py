"""The model images start as their CMD/ENTRYPOINT says and their HEALTHCHECK turns healthy.

Each runs in a network namespace of its own (``--network none``): the health check reaches the
server on the container's loopback, and nothing else is reachable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.bioimageio.samples import write_sample_package
from tests.container.engine import BIOIMAGEIO, MODELS, docker, image_config, remove, wait_for_health

pytestmark = pytest.mark.docker

FAST_HEALTH = ["--health-interval", "1s", "--health-start-period", "60s"]


@pytest.fixture
def container() -> Iterator[str]:
    name = f"modelrunner-test-{uuid.uuid4().hex[:8]}"
    yield name
    remove(name)


def test_models_image_serves_and_turns_healthy(container: str) -> None:
    image_config(MODELS)
    docker("run", "--detach", "--name", container, "--network", "none", *FAST_HEALTH, MODELS)
    wait_for_health(container, "healthy", timeout_s=60)


def test_bioimageio_image_serves_a_mounted_package(container: str, tmp_path: Path) -> None:
    image_config(BIOIMAGEIO)
    package = write_sample_package(tmp_path / "bright")
    for path in [tmp_path, *tmp_path.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)  # readable by uid 10001
    docker(
        *("run", "--detach", "--name", container, "--network", "none", *FAST_HEALTH),
        *("--read-only", "--tmpfs", "/tmp", "--volume", f"{tmp_path}:/models:ro"),
        BIOIMAGEIO,
        *("--package", f"bright=/models/{package.relative_to(tmp_path)}"),
        *("--weights-format", "onnx"),
    )
    wait_for_health(container, "healthy", timeout_s=90)
