"""The deployment files: Dockerfile, docker-compose stack and Kubernetes manifests.

No engine or cluster is needed: hadolint and kubernetes-validate (from the dev extras) lint and
validate the files, and the cross-file relations (names, targets, settings, grace periods) are
checked against the code they configure.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.bootstrap import ResourceNames
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "infra" / "docker-compose.yml"
K8S = ROOT / "infra" / "k8s"
BIN = Path(sys.executable).parent
BASE_IMAGE = "python:3.11-slim-bookworm"
# Oldest Kubernetes minor the manifests are validated against (EKS extended support).
KUBERNETES_VERSION = "1.30.0"
CORE_MANIFESTS = ["namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "deployment.yaml"]
CORE_MANIFESTS += ["pdb.yaml"]
ENV_PREFIX = "MODELRUNNER_"


# --- Dockerfile -------------------------------------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` of the Dockerfile and the instructions under it."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        """Arguments of the last ``keyword`` instruction of this stage."""
        found = [args for key, args in self.instructions if key == keyword]
        return found[-1] if found else None

    def all(self, keyword: str) -> list[str]:
        """Arguments of every ``keyword`` instruction of this stage."""
        return [args for key, args in self.instructions if key == keyword]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


@cache
def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name (unnamed ones by index)."""
    result: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert match, f"cannot read FROM {args}"
            current = Stage(base=match[1], name=match[2])
            result[match[2] or str(len(result))] = current
        elif current is not None:
            current.instructions.append((keyword, args))
        else:
            assert keyword == "ARG", f"{keyword} before the first FROM"
    return result


def stage_chain(name: str) -> list[Stage]:
    """The stage ``name`` and the stages it is built on, nearest first."""
    chain = [stages()[name]]
    while chain[-1].base in stages():
        chain.append(stages()[chain[-1].base])
    return chain


def inherited(name: str, keyword: str) -> str | None:
    """The value of ``keyword`` (USER, ENTRYPOINT, ...) stage ``name`` ends with."""
    for stage in stage_chain(name):
        value = stage.last(keyword)
        if value is not None:
            return value
    return None


def stage_env(name: str) -> dict[str, str]:
    """``ENV key=value`` settings in effect in stage ``name``."""
    env: dict[str, str] = {}
    for stage in reversed(stage_chain(name)):
        for args in stage.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) instruction argument."""
    value = yaml.safe_load(args)
    assert isinstance(value, list), f"not in exec form: {args}"
    return [str(part) for part in value]


def healthcheck_command(name: str) -> list[str]:
    """The exec-form command of the HEALTHCHECK stage ``name`` ends with."""
    args = inherited(name, "HEALTHCHECK")
    assert args is not None, f"stage {name} has no HEALTHCHECK"
    _options, _, command = args.partition("CMD ")
    return exec_form(command)


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


# --- settings ---------------------------------------------------------------------------------


def assert_valid_settings(variables: dict[str, str], where: str) -> None:
    """Every MODELRUNNER_* variable names a Settings field and has a value it accepts."""
    fields = {}
    for name, value in variables.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name.removeprefix(ENV_PREFIX).lower()
        assert key in Settings.model_fields, f"{where}: {name} is not a setting"
        fields[key] = value
    Settings.model_validate(fields)


def test_unknown_settings_are_caught() -> None:
    with pytest.raises(AssertionError, match="MODELRUNNER_NO_SUCH"):
        assert_valid_settings({"MODELRUNNER_NO_SUCH": "1"}, "test")


# --- docker compose ---------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return services[name]


def service_env(name: str) -> dict[str, str]:
    return {key: str(value) for key, value in service(name).get("environment", {}).items()}


def seconds(duration: str) -> float:
    """A compose duration such as ``120s`` or ``2m``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)", duration)
    assert match, duration
    return float(match[1]) * (60 if match[2] == "m" else 1)


def test_compose_services() -> None:
    assert set(compose()["services"]) == {"localstack", "bootstrap", "model", "worker"}


def test_compose_builds_existing_targets() -> None:
    for name in ("bootstrap", "model", "worker"):
        build = service(name)["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] in stages(), f"{name}: no stage {build['target']}"
    assert service("model")["build"]["target"] == "models"
    assert service("worker")["build"]["target"] == "worker"
    # The worker image holds the service alone: infra.bootstrap comes with the models image.
    assert service("bootstrap")["build"]["target"] == "models"


def test_compose_moto_override_replaces_localstack() -> None:
    override = yaml.safe_load((COMPOSE.parent / "docker-compose.moto.yml").read_text())
    (name,) = override["services"]
    emulator = override["services"][name]
    assert name == "localstack", "same service name: the others reach it as localstack:4566"
    assert emulator["build"]["target"] == "emulator"
    assert emulator["build"]["target"] in stages()
    assert emulator["image"] == "modelrunner-emulator:local"
    account = service_env("worker")["MODELRUNNER_STATUS_TOPIC_ARN"].split(":")[4]
    assert emulator["environment"]["MOTO_ACCOUNT_ID"] == account
    assert "4566" in " ".join(emulator["healthcheck"]["test"])


def test_compose_start_order() -> None:
    assert service("bootstrap")["depends_on"] == {"localstack": {"condition": "service_healthy"}}
    assert service("worker")["depends_on"] == {
        "localstack": {"condition": "service_healthy"},
        "bootstrap": {"condition": "service_completed_successfully"},
        "model": {"condition": "service_healthy"},
    }
    # service_healthy needs a health check: compose's for LocalStack, the image's for the model.
    assert "curl" in service("localstack")["healthcheck"]["test"]
    assert inherited(service("model")["build"]["target"], "HEALTHCHECK")
    assert service("bootstrap")["restart"] == "no"


def test_compose_localstack() -> None:
    localstack = service("localstack")
    assert re.fullmatch(r"localstack/localstack:3\.\d+(\.\d+)?", localstack["image"])
    assert set(localstack["environment"]["SERVICES"].split(",")) == {
        "sqs",
        "sns",
        "s3",
        "dynamodb",
        "kinesis",
        "sts",
    }
    assert localstack["ports"] == ["127.0.0.1:4566:4566"], "published on loopback only"


def test_compose_bootstrap_runs_against_localstack() -> None:
    bootstrap = service("bootstrap")
    assert bootstrap["entrypoint"] == ["python", "-m", "infra.bootstrap"]
    assert bootstrap["command"][0] == "http://localstack:4566"
    assert bootstrap["healthcheck"] == {"disable": True}


def test_compose_worker_settings_are_real_settings() -> None:
    assert_valid_settings(service_env("worker"), "compose worker")


def test_compose_worker_points_at_what_bootstrap_creates() -> None:
    env = service_env("worker")
    names = ResourceNames()
    region = env["MODELRUNNER_AWS_REGION"]
    topic = f"arn:aws:sns:{region}:000000000000:"
    assert env["AWS_ENDPOINT_URL"] == service("bootstrap")["command"][0]
    assert env["MODELRUNNER_IMAGE_QUEUE"] == names.image_queue
    assert env["MODELRUNNER_IMAGE_DLQ"] == f"{names.image_queue}DLQ"
    assert env["MODELRUNNER_REGION_QUEUE"] == names.region_queue
    assert env["MODELRUNNER_REGION_DLQ"] == f"{names.region_queue}DLQ"
    assert env["MODELRUNNER_JOB_TABLE"] == names.job_table
    assert env["MODELRUNNER_STAGING_BUCKET"] == names.staging_bucket
    assert env["MODELRUNNER_STATUS_TOPIC_ARN"] == topic + names.status_topic
    assert env["MODELRUNNER_REGION_STATUS_TOPIC_ARN"] == topic + names.region_status_topic
    assert "model:8080" in env["MODELRUNNER_ENDPOINT_HOSTS"].split(",")
    assert env["AWS_S3_ENDPOINT"] == "localstack:4566"


def test_compose_worker_stop_grace_exceeds_the_grace_period() -> None:
    grace = float(service_env("worker")["MODELRUNNER_GRACE_PERIOD_S"])
    assert seconds(service("worker")["stop_grace_period"]) > grace


# --- Kubernetes -------------------------------------------------------------------------------


@cache
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object in infra/k8s (kustomization excluded) by (kind, name)."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = document
    return objects


def one(kind: str) -> dict[str, Any]:
    found = [document for (k, _), document in manifests().items() if k == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def worker_container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def config() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap")["data"]
    return data


def test_core_manifests_validate() -> None:
    result = subprocess.run(
        [
            *(str(BIN / "kubernetes-validate"), "--strict", "--quiet"),
            *("--kubernetes-version", KUBERNETES_VERSION),
            *(str(K8S / name) for name in CORE_MANIFESTS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_lists_every_file() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {path.name for path in K8S.iterdir()} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    image_names = {image["name"] for image in kustomization["images"]}
    assert worker_container()["image"].split(":")[0] in image_names


def test_deployment_security() -> None:
    deployment = one("Deployment")
    assert deployment["metadata"]["name"] == "modelrunner-worker"
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = worker_container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert str(context["runAsUser"]) == (inherited("worker", "USER") or "").split(":")[0]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_deployment_has_a_writable_tmp_for_the_health_file() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    mounts = {mount["mountPath"]: mount["name"] for mount in worker_container()["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    image_default = stage_env("worker")["MODELRUNNER_HEALTH_FILE"]
    assert config().get("MODELRUNNER_HEALTH_FILE", image_default).startswith("/tmp/")


def test_deployment_resources_and_probe() -> None:
    container = worker_container()
    assert set(container["resources"]) == {"requests", "limits"}
    for kind in ("cpu", "memory"):
        assert kind in container["resources"]["requests"]
        assert kind in container["resources"]["limits"]
    assert container["livenessProbe"]["exec"]["command"] == healthcheck_command("worker")
    config_map = one("ConfigMap")["metadata"]["name"]
    assert container["envFrom"] == [{"configMapRef": {"name": config_map}}]


def test_configmap_keys_are_real_settings() -> None:
    assert all(key.startswith(ENV_PREFIX) for key in config())
    assert_valid_settings(config(), "configmap")


def test_termination_grace_exceeds_the_worker_grace_period() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(config()["MODELRUNNER_GRACE_PERIOD_S"])


def test_service_account_has_an_irsa_role() -> None:
    name = one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    account = manifests()[("ServiceAccount", name)]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", role)


def test_pdb_selects_the_worker_pods() -> None:
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one("Deployment")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_keda_scaled_object() -> None:
    scaled = one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == (
        "Deployment",
        one("Deployment")["metadata"]["name"],
    )
    spec = scaled["spec"]
    assert spec["minReplicaCount"] in {0, 1}
    assert spec["maxReplicaCount"] > max(1, spec["minReplicaCount"])
    assert spec["cooldownPeriod"] > 0
    triggers = spec["triggers"]
    assert all(trigger["type"] == "aws-sqs-queue" for trigger in triggers)
    queues = {trigger["metadata"]["queueURL"] for trigger in triggers}
    assert queues == {config()["MODELRUNNER_IMAGE_QUEUE"], config()["MODELRUNNER_REGION_QUEUE"]}
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert metadata["awsRegion"] == config()["MODELRUNNER_AWS_REGION"]
        assert int(metadata["queueLength"]) >= 1
        assert "identityOwner" not in metadata, "deprecated: use a TriggerAuthentication"
        auth = manifests()[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
        assert auth["apiVersion"] == "keda.sh/v1alpha1"
        assert auth["spec"]["podIdentity"]["provider"] == "aws"
