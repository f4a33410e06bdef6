"""The Dockerfile and .dockerignore: hadolint clean, the targets, the user, the context.

No engine is needed: hadolint (from the dev extras) lints the file, and the stages are read
and checked against the code and packaging they build.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.files import (
    BIN,
    DOCKERFILE,
    ROOT,
    exec_form,
    healthcheck_command,
    inherited,
    stage_env,
    stages,
)

DOCKERIGNORE = ROOT / ".dockerignore"
BASE_IMAGE = "python:3.11-slim-bookworm"


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_targets_exist_and_worker_is_the_default() -> None:
    assert {"builder", "runtime", "worker", "models"} <= stages().keys()
    assert list(stages())[-1] == "worker", "the last stage is what a plain `docker build` gives"


def test_every_image_comes_from_the_pinned_base() -> None:
    external = {stage.base for stage in stages().values() if stage.base not in stages()}
    assert external == {BASE_IMAGE}


@pytest.mark.parametrize("target", ["worker", "models"])
def test_final_stages_run_as_the_non_root_user(target: str) -> None:
    user = inherited(target, "USER")
    assert user is not None, f"{target} runs as root"
    uid = user.split(":")[0]
    assert uid not in {"0", "root"}
    assert uid == "10001"


def test_runtime_environment() -> None:
    env = stage_env("worker")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["MODELRUNNER_HEALTH_FILE"].startswith("/tmp/")
    assert inherited("worker", "WORKDIR") == "/app"


def test_worker_target() -> None:
    assert healthcheck_command("worker") == ["python", "-m", "worker.health"]
    assert exec_form(inherited("worker", "ENTRYPOINT") or "") == ["python", "-m", "worker"]
    assert inherited("worker", "STOPSIGNAL") == "SIGTERM"


def test_models_target() -> None:
    command = exec_form(inherited("models", "CMD") or "")
    assert command[:3] == ["python", "-m", "models"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "8080"
    assert "8080" in stages()["models"].all("EXPOSE")
    probe = healthcheck_command("models")
    assert probe[:2] == ["python", "-c"]
    assert "urllib" in probe[2]
    assert "http://127.0.0.1:8080/ping" in probe[2]
    assert inherited("models", "ENTRYPOINT") is None


def test_pip_runs_without_cache() -> None:
    runs = [args for stage in stages().values() for args in stage.all("RUN")]
    pip_commands = [
        part
        for run in runs
        for part in run.split("&&")
        if re.search(r"\bpip (--python \S+ )?(install|wheel|download)\b", part)
    ]
    assert pip_commands
    for command in pip_commands:
        assert "--no-cache-dir" in command, command


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_ignored(path: str) -> bool:
    """Whether ``path`` (relative to the context) or a parent of it is excluded."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in dockerignore_patterns():
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or fnmatch.fnmatchcase(Path(prefix).name, bare):
                return True
    return False


def copied_sources() -> list[str]:
    """Context paths the Dockerfile's COPY instructions read (not those copying from a stage)."""
    sources: list[str] = []
    for stage in stages().values():
        for args in stage.all("COPY"):
            if "--from=" in args:
                continue
            parts = [part for part in args.split() if not part.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def test_copy_sources_exist_and_are_in_the_context() -> None:
    for source in copied_sources():
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not is_ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_copied_packages_are_those_of_package_discovery() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in include}
    copied = set(copied_sources())
    assert packages <= copied
    assert {"pyproject.toml", project["project"]["readme"]} <= copied
    for package_data in project["tool"]["setuptools"]["package-data"]["infra"]:
        for data in (ROOT / "infra").glob(package_data):
            assert not is_ignored(str(data.relative_to(ROOT))), data


def test_dockerignore_keeps_development_files_out() -> None:
    for path in [".venv", ".git", ".local-stack", "tests", "modelrunner.egg-info"]:
        assert is_ignored(path), path
    assert is_ignored("worker/__pycache__/loop.cpython-311.pyc")
    assert not is_ignored("worker/loop.py")
