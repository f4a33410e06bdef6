"""The docker-compose stack: services, build targets, start order and worker settings.

No engine is needed: the file is read and checked against the Dockerfile's stages, the
settings and the resources infra.bootstrap creates.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
import yaml

from infra.bootstrap import ResourceNames
from tests.deploy.files import DOCKERFILE, ROOT, assert_valid_settings, inherited, stages

COMPOSE = ROOT / "infra" / "docker-compose.yml"


def test_unknown_settings_are_caught() -> None:
    with pytest.raises(AssertionError, match="MODELRUNNER_NO_SUCH"):
        assert_valid_settings({"MODELRUNNER_NO_SUCH": "1"}, "test")


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
