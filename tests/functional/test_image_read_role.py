"""imageReadRole against moto with IAM enforced: only the role can read the image bucket.

moto checks every request after its first ``FREE_ACTIONS`` against its IAM: those free actions
make a worker user (allowed everything but S3 on the image bucket, denied explicitly), an admin
user for the test itself, a ``reader`` role the worker may assume (its trust policy names the
worker) that may read the image bucket, and a ``locked`` role whose trust policy names someone
else. Everything afterwards, provisioning included, is signed with those users' keys.
"""

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError

from infra.bootstrap import ResourceNames
from infra.local_stack import LocalStack
from tests.functional.helpers import Stack, stack_of, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM, grid_count

pytestmark = pytest.mark.functional

ACCOUNT = "123456789012"
IMAGE_BUCKET = ResourceNames().image_bucket
FREE_ACTIONS = 9  # the IAM calls of IamSetup.__call__, unauthenticated by moto


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def trust(principal: str) -> str:
    return policy({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"})


IMAGE_ARNS = [f"arn:aws:s3:::{IMAGE_BUCKET}", f"arn:aws:s3:::{IMAGE_BUCKET}/*"]


@dataclass
class IamSetup:
    """Makes the users and roles (``FREE_ACTIONS`` calls); keeps the worker's keys."""

    worker_env: dict[str, str] = field(default_factory=dict)
    reader: str = ""
    locked: str = ""

    def __call__(self, endpoint_url: str) -> dict[str, str]:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="unauthenticated",
            aws_secret_access_key="unauthenticated",
        )
        worker_arn = iam.create_user(UserName="worker")["User"]["Arn"]
        iam.put_user_policy(
            UserName="worker",
            PolicyName="all-but-images",
            PolicyDocument=policy(
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:*", "Resource": IMAGE_ARNS},
            ),
        )
        self.worker_env = self._keys(iam.create_access_key(UserName="worker")["AccessKey"])
        iam.create_user(UserName="admin")
        iam.put_user_policy(
            UserName="admin",
            PolicyName="all",
            PolicyDocument=policy({"Effect": "Allow", "Action": "*", "Resource": "*"}),
        )
        admin_env = self._keys(iam.create_access_key(UserName="admin")["AccessKey"])
        self.reader = iam.create_role(
            RoleName="reader", AssumeRolePolicyDocument=trust(worker_arn)
        )["Role"]["Arn"]
        iam.put_role_policy(
            RoleName="reader",
            PolicyName="read-images",
            PolicyDocument=policy(
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:ListBucket"],
                    "Resource": IMAGE_ARNS,
                }
            ),
        )
        self.locked = iam.create_role(
            RoleName="locked", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{ACCOUNT}:user/nobody")
        )["Role"]["Arn"]
        return admin_env

    @staticmethod
    def _keys(key: Any) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }


@dataclass
class IamStack:
    stack: Stack
    iam: IamSetup


@pytest.fixture(scope="module")
def iam_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamStack]:
    saved = dict(os.environ)
    setup = IamSetup()
    local = LocalStack(
        tmp_path_factory.mktemp("iam"),
        moto_env={"INITIAL_NO_AUTH_ACTION_COUNT": str(FREE_ACTIONS)},
        before_provision=setup,
    )
    try:
        with local:
            worker = local.start_worker(
                "worker",
                MODELRUNNER_MAX_ATTEMPTS="2",
                MODELRUNNER_RETRY_DELAY_S="1",
                **setup.worker_env,
            )
            yield IamStack(stack_of(local, worker), setup)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(stack: Stack, image_url: str, **extra: Any) -> tuple[str, str]:
    """Submit a job, wait for its end: (job id, final status message)."""
    request = stack.request(image_url, jobId=f"role-{uuid.uuid4().hex[:10]}", **extra)
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"], timeout_s=45)[-1]
    return request["jobId"], final.message


def test_image_read_role_is_what_grants_access(iam_stack: IamStack, tmp_path: Path) -> None:
    stack, iam = iam_stack.stack, iam_stack.iam
    pixels = np.random.default_rng(3).integers(100, 255, (3, 700, 1000), dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "private.tif", pixels, TRANSFORM, UTM))
    worker_s3 = boto3.client(
        "s3",
        endpoint_url=stack.local.endpoint_url,
        aws_access_key_id=iam.worker_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=iam.worker_env["AWS_SECRET_ACCESS_KEY"],
    )
    with pytest.raises(ClientError, match="AccessDenied"):  # the worker's own keys cannot
        worker_s3.get_object(Bucket=IMAGE_BUCKET, Key=image_url.split("/", 3)[3])

    # Without the role first: the failure GDAL remembers must not stick to the role's reads.
    job_id, message = run(stack, image_url)
    assert message.startswith(f"StatusMonitor update: FAILED {job_id}: ")
    assert f"cannot open image {image_url}" in message

    job_id, message = run(stack, image_url, imageReadRole=iam.reader)
    assert message.startswith(f"StatusMonitor update: SUCCESS {job_id}: "), message
    features = stack.result(job_id)["features"]
    assert len(features) == grid_count(1000, 512, 64) * grid_count(700, 512, 64) == 6
    assert all(f["properties"]["featureClasses"][0]["iri"] == "sample_object" for f in features)

    # And what the role read must not be served from GDAL's cache to a job without it.
    job_id, message = run(stack, image_url)
    assert message.startswith(f"StatusMonitor update: FAILED {job_id}: ")

    bad_roles = [iam.locked, f"arn:aws:iam::{ACCOUNT}:rol"]  # untrusted; malformed
    for role in bad_roles:
        job_id, message = run(stack, image_url, imageReadRole=role)
        assert message.startswith(f"StatusMonitor update: FAILED {job_id}: "), message
        assert f"cannot assume imageReadRole {role}: " in message
        dead = stack.dead_letters(job_id)
        assert any(
            job_id in body and f"cannot assume imageReadRole {role}" in r for body, r in dead
        )
    assert stack.worker.poll() is None  # the worker is still running

    # Both at once: the role's keys are the role job's alone.
    with_role = stack.request(image_url, jobId=f"role-{uuid.uuid4().hex[:10]}")
    with_role["imageReadRole"] = iam.reader
    without = stack.request(image_url, jobId=f"role-{uuid.uuid4().hex[:10]}")
    stack.submit(json.dumps(with_role))
    stack.submit(json.dumps(without))
    for request, status in ((with_role, "SUCCESS"), (without, "FAILED")):
        final = stack.statuses.wait_terminal(request["jobId"], timeout_s=45)[-1]
        assert final.attributes["status"] == status, final.message
