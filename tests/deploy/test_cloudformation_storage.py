"""The CloudFormation template: cfn-lint clean, and the storage the worker relies on.

The work queues and their dead-letter queues, the job table and its indexes, the result and
staging buckets.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.cloudformation import TEMPLATE, props, resources, template
from worker.poison import HARD_LIMIT_FACTOR
from worker.settings import Settings


def test_cfn_lint_finds_nothing() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run(
        [str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_work_queues_redrive_to_their_dead_letter_queues() -> None:
    queues = resources("AWS::SQS::Queue")
    assert set(queues) == {"ImageQueue", "ImageDlq", "RegionQueue", "RegionDlq"}
    dead_letter = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues.values()
        if "RedrivePolicy" in q["Properties"]
    }
    assert dead_letter == {"ImageDlq", "RegionDlq"}
    for name, queue in queues.items():
        properties = queue["Properties"]
        assert properties["SqsManagedSseEnabled"] is True
        if name in dead_letter:
            assert "RedrivePolicy" not in properties
            assert properties["MessageRetentionPeriod"] == 14 * 24 * 3600
            continue
        assert properties["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [f"{name.removesuffix('Queue')}Dlq", "Arn"]},
            "maxReceiveCount": {"Ref": "RedriveCount"},
        }
        assert properties["VisibilityTimeout"] == {"Ref": "VisibilityTimeout"}
    parameters = template()["Parameters"]
    assert parameters["VisibilityTimeout"]["Default"] == 300
    assert parameters["RedriveCount"]["Default"] == 20
    # The worker settles a message itself before SQS moves it (docs/architecture.md).
    max_receives = Settings.model_fields["max_receives"].default
    assert parameters["RedriveCount"]["MinValue"] > HARD_LIMIT_FACTOR * max_receives


def test_queue_policy_denies_plain_http_on_every_queue() -> None:
    policy = props("QueuesTlsOnlyPolicy")
    assert {q["Ref"] for q in policy["Queues"]} == set(resources("AWS::SQS::Queue"))
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_job_table_has_the_worker_key_index_and_ttl() -> None:
    table = props("JobTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "image_id", "KeyType": "HASH"}]
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {
        Settings.model_fields["job_index"].default,
        Settings.model_fields["endpoint_index"].default,
        Settings.model_fields["unfinished_index"].default,
    }
    jobs = indexes["job_id-index"]
    assert jobs["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    assert jobs["Projection"] == {"ProjectionType": "ALL"}
    active = indexes["active_endpoint-index"]
    assert active["KeySchema"] == [{"AttributeName": "active_endpoint", "KeyType": "HASH"}]
    # What the capacity check reads from the sparse index (jobstore.active_load).
    assert set(active["Projection"]["NonKeyAttributes"]) >= {"endpoint_load", "job_id", "deadline"}
    # What the sweep reads (jobstore.stalled): claimed images, by lease expiry.
    unfinished = indexes["unfinished-index"]
    assert unfinished["KeySchema"] == [
        {"AttributeName": "unfinished", "KeyType": "HASH"},
        {"AttributeName": "lease_until", "KeyType": "RANGE"},
    ]
    assert set(unfinished["Projection"]["NonKeyAttributes"]) >= {"job_id", "image_url"}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expire_time", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


@pytest.mark.parametrize(
    ("bucket", "policy"),
    [("ResultBucket", "ResultBucketPolicy"), ("StagingBucket", "StagingBucketPolicy")],
)
def test_buckets_are_encrypted_private_and_tls_only(bucket: str, policy: str) -> None:
    properties = props(bucket)
    (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert properties["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"],
        True,
    )
    document = props(policy)
    assert document["Bucket"] == {"Ref": bucket}
    (statement,) = document["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [
        {"Fn::GetAtt": [bucket, "Arn"]},
        {"Fn::Sub": f"${{{bucket}.Arn}}/*"},
    ]


def test_results_are_versioned_and_kept_staging_expires() -> None:
    assert props("ResultBucket")["VersioningConfiguration"] == {"Status": "Enabled"}
    assert template()["Resources"]["ResultBucket"]["DeletionPolicy"] == "Retain"
    rules = props("StagingBucket")["LifecycleConfiguration"]["Rules"]
    expiry = next(r for r in rules if "ExpirationInDays" in r)
    assert expiry["Status"] == "Enabled"
    assert expiry["Prefix"] == {"Fn::Sub": "${StagingPrefix}/"}
    assert expiry["ExpirationInDays"] == {"Ref": "StagingExpiryDays"}
    parameters = template()["Parameters"]
    assert parameters["StagingExpiryDays"]["Default"] == 7
    assert parameters["StagingPrefix"]["Default"] == Settings.model_fields["staging_prefix"].default
