"""The Docker engine the container tests drive, through the docker command.

``make test-container`` (infra/container/test.sh) starts the engine, builds the images and sets
``DOCKER_HOST`` and ``MODELRUNNER_DOCKER`` (the docker command to use) for these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

DOCKER = os.environ.get("MODELRUNNER_DOCKER", "docker")
WORKER = "modelrunner-worker:local"
MODELS = "modelrunner-models:local"
BIOIMAGEIO = "modelrunner-bioimageio:local"
EMULATOR = "modelrunner-emulator:local"
BUILD_HINT = "build them: infra/container/build.sh (after infra/container/engine.sh start)"


def docker(*args: str, timeout_s: float = 120, check: bool = True) -> str:
    """Run ``docker *args`` and return its standard output (raise on failure if ``check``)."""
    result = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def logs(container: str, tail: int | None = None) -> str:
    """What the container wrote, standard output and error together."""
    args = [DOCKER, "logs", *(["--tail", str(tail)] if tail else []), container]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    return result.stdout + result.stderr


def require_engine() -> None:
    """Skip when no engine answers; fail instead under ``make test-container``."""
    try:
        answered = (
            subprocess.run(
                [DOCKER, "version"], capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        answered = False
    if answered:
        return
    message = f"no Docker engine answers to {DOCKER!r} (infra/container/engine.sh start)"
    if os.environ.get("MODELRUNNER_REQUIRE_DOCKER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def inspect(kind: str, name: str) -> dict[str, Any]:
    """``docker <kind> inspect name`` (kind: image or container) as a dict."""
    result: list[dict[str, Any]] = json.loads(docker(kind, "inspect", name))
    return result[0]


def image_config(tag: str) -> dict[str, Any]:
    """The ``Config`` of a built image (fail with how to build it if it is missing)."""
    if not docker("image", "ls", "--quiet", tag).strip():
        pytest.fail(f"image {tag} is missing: {BUILD_HINT}")
    config: dict[str, Any] = inspect("image", tag)["Config"]
    return config


def image_env(tag: str) -> dict[str, str]:
    """The image's ``ENV`` as a dict."""
    return dict(item.split("=", 1) for item in image_config(tag)["Env"])


def health(container: str) -> str:
    """The container's health status (starting, healthy, unhealthy)."""
    return str(inspect("container", container)["State"]["Health"]["Status"])


def wait_for_health(container: str, status: str, timeout_s: float) -> float:
    """Wait until the container's health is ``status``; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    while (current := health(container)) != status:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{container}: {current}, not {status}, after {timeout_s}s\n{logs(container, 30)}"
            )
        time.sleep(0.5)
    return time.monotonic() - started


def remove(container: str) -> None:
    """Remove a container whatever its state (no error if it is gone)."""
    docker("rm", "--force", "--volumes", container, check=False, timeout_s=60)
