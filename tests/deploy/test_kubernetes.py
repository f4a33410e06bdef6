"""The Kubernetes manifests: valid, secure, and consistent with the image and the settings.

No cluster is needed: kubernetes-validate (from the dev extras) validates the core manifests
against the oldest Kubernetes minor supported; the rest is read and cross-checked.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from typing import Any

import yaml

from tests.deploy.files import (
    BIN,
    ENV_PREFIX,
    ROOT,
    assert_valid_settings,
    healthcheck_command,
    inherited,
    stage_env,
)

K8S = ROOT / "infra" / "k8s"
# Oldest Kubernetes minor the manifests are validated against (EKS extended support).
KUBERNETES_VERSION = "1.30.0"
CORE_MANIFESTS = ["namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "deployment.yaml"]
CORE_MANIFESTS += ["pdb.yaml"]


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
