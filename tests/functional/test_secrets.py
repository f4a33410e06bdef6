"""Credentials of assumed roles never leave the worker: not in logs, statuses, DLQ or outputs."""

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from infra.local_stack import LocalStack
from tests.functional.helpers import Stack, stack_of, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: moto's model dump fails once other tests have deleted buckets."""
    with LocalStack(tmp_path_factory.mktemp("secrets")) as local:
        yield stack_of(local, local.start_worker("worker", MODELRUNNER_MAX_ATTEMPTS="2"))


def issued_credentials(moto_url: str) -> set[str]:
    """Every key id, secret and session token moto's STS has handed out so far."""
    with urllib.request.urlopen(f"{moto_url}/moto-api/data.json", timeout=10) as reply:
        data = json.loads(reply.read())
    secrets: set[str] = set()
    for instances in data.get("sts", {}).values():
        for role in instances:
            for key in ("access_key_id", "secret_access_key", "session_token"):
                if role.get(key):
                    secrets.add(str(role[key]))
    return secrets


def test_assumed_role_credentials_appear_nowhere(own_stack: Stack, tmp_path: Path) -> None:
    stack = own_stack
    pixels = np.full((1, 300, 300), 150, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "secret.tif", pixels, TRANSFORM, UTM))
    good = stack.request(
        image_url,
        imageProcessor={
            "name": "centerpoint",
            "type": "SM_ENDPOINT",
            "assumedRole": "arn:aws:iam::123456789012:role/secret-model",
        },
        outputs=[
            {
                "type": "S3",
                "bucket": stack.local.resources.bucket,
                "prefix": "secret",
                "role": "arn:aws:iam::123456789012:role/secret-writer",
            },
            {
                "type": "Kinesis",
                "stream": stack.local.resources.stream,
                "assumedRole": "arn:aws:iam::123456789012:role/secret-stream",
            },
        ],
    )
    # The same roles, but an output that cannot be written: FAILED, and the body dead-lettered.
    failing = {
        **good,
        "jobId": f"{good['jobId']}-fails",
        "outputs": [
            {
                "type": "S3",
                "bucket": "no-such-bucket",
                "prefix": "x",
                "role": "arn:aws:iam::123456789012:role/secret-writer",
            }
        ],
    }
    stack.submit(json.dumps(good))
    stack.submit(json.dumps(failing))
    seen = stack.statuses.wait_terminal(good["jobId"]) + stack.statuses.wait_terminal(
        failing["jobId"], timeout_s=180
    )
    assert seen[-1].attributes["status"] == "FAILED"

    secrets = issued_credentials(stack.local.endpoint_url)
    assert len(secrets) >= 3, "the job assumed no role"
    places = {
        "worker log": (stack.local.log_dir / "worker.log").read_text(),
        "status messages": json.dumps([[s.message, s.attributes] for s in seen]),
        "S3 output": json.dumps(stack.result(good["jobId"], prefix="secret")),
        "Kinesis records": json.dumps(stack.kinesis_records(good["jobId"])),
        "image DLQ": json.dumps(stack.dead_letters()),
    }
    for place, text in places.items():
        leaked = sorted(s[:6] for s in secrets if s in text)
        assert not leaked, f"credentials in the {place}: {leaked}"
