"""The CloudFormation template: cfn-lint clean, and the properties the worker relies on."""

import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.settings import Settings

TEMPLATE = Path(__file__).parents[1] / "infra" / "cloudformation" / "modelrunner.yaml"
QUEUE_METRIC = "ApproximateNumberOfMessagesVisible"

# Every call the worker makes (worker/*.py), as IAM actions; see the TaskRole's comments.
WORKER_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:SendMessage",
    "sqs:GetQueueUrl",
    "sns:Publish",
    "dynamodb:PutItem",
    "dynamodb:GetItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListBucket",
    "kinesis:PutRecords",
    "kinesis:ListShards",
    "sagemaker:InvokeEndpoint",
    "sagemaker:DescribeEndpoint",
    "sagemaker:ListTags",
    "sts:AssumeRole",
}
# What DeployService=false creates; everything else needs the ECS service.
MESSAGING_AND_STORAGE = {
    "ImageQueue",
    "ImageDlq",
    "RegionQueue",
    "RegionDlq",
    "QueuesTlsOnlyPolicy",
    "JobTable",
    "StatusTopic",
    "RegionStatusTopic",
    "ResultBucket",
    "ResultBucketPolicy",
    "StagingBucket",
    "StagingBucketPolicy",
    "ResultStream",
}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short tags (``!Ref``, ``!GetAtt``, ``!Sub``...)."""


def _short_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    """``!Ref x`` -> ``{"Ref": x}``, ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``, ..."""
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in {"Ref", "Condition"}:
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_tag)


@cache
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    return loaded


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template()["Resources"].items() if v["Type"] == kind}


def props(logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = template()["Resources"][logical_id]["Properties"]
    return properties


def branches(value: Any) -> Iterator[Any]:
    """The values a possibly conditional (``Fn::If``) value can take, without ``AWS::NoValue``."""
    if isinstance(value, dict) and "Fn::If" in value:
        for branch in value["Fn::If"][1:]:
            yield from branches(branch)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def references(value: Any) -> set[str]:
    """Logical ids and parameters named by Ref, GetAtt and Sub in ``value`` (no pseudo ones)."""
    if isinstance(value, list):
        return set().union(*(references(v) for v in value))
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, inner in value.items():
        if key == "Ref":
            found |= set() if inner.startswith("AWS::") else {inner}
        elif key == "Fn::GetAtt":
            found.add(inner[0])
        elif key == "Fn::Sub":
            text = inner if isinstance(inner, str) else inner[0]
            names = {part.split("}")[0].split(".")[0] for part in text.split("${")[1:]}
            local = set(inner[1]) if isinstance(inner, list) else set()
            found |= {n for n in names - local if not n.startswith("AWS::")}
            if isinstance(inner, list):
                found |= references(inner[1:])
        else:
            found |= references(inner)
    return found


def task_role_statements() -> list[dict[str, Any]]:
    statements = []
    for policy in props("TaskRole")["Policies"]:
        for document in branches(policy):
            for statement in document["PolicyDocument"]["Statement"]:
                statements += list(branches(statement))
    return statements


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
    assert parameters["RedriveCount"]["Default"] == 5
    # The worker settles a message itself before SQS moves it (README "Regions and many workers").
    assert parameters["RedriveCount"]["MinValue"] > Settings.model_fields["max_receives"].default


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


def test_task_role_allows_exactly_the_worker_calls() -> None:
    statements = task_role_statements()
    actions = {a for s in statements for a in as_list(s["Action"])}
    assert actions == WORKER_ACTIONS
    assert all(s["Effect"] == "Allow" for s in statements)
    assert not [a for a in actions if "*" in a]
    assert not [s for s in statements if "*" in as_list(s["Resource"])]
    sids = [s["Sid"] for s in statements]
    assert len(sids) == len(set(sids))


def test_task_role_is_scoped_to_the_stack_resources() -> None:
    by_sid = {s["Sid"]: s for s in task_role_statements()}
    assert references(by_sid["Queues"]["Resource"]) == set(resources("AWS::SQS::Queue"))
    assert references(by_sid["Statuses"]["Resource"]) == {"StatusTopic", "RegionStatusTopic"}
    assert references(by_sid["JobRecords"]["Resource"]) == {"JobTable"}
    assert references(by_sid["Results"]["Resource"]) == {"ResultBucket"}
    assert references(by_sid["StagedRegions"]["Resource"]) == {"StagingBucket", "StagingPrefix"}
    assert references(by_sid["ResultRecords"]["Resource"]) == {"ResultStream"}
    assert references(by_sid["RequestRoles"]["Resource"]) == {"AssumableRoleArns"}
    assert references(by_sid["Images"]["Resource"]) == {"ImageBucketArns"}
    endpoint = by_sid["ModelEndpoints"]["Resource"]["Fn::Sub"]
    assert endpoint.endswith(":${AWS::AccountId}:endpoint/${SageMakerEndpointNames}")


def test_only_messaging_and_storage_exist_without_the_service() -> None:
    conditions = {k: v.get("Condition") for k, v in template()["Resources"].items()}
    ungated = {k for k, c in conditions.items() if c in {None, "CreateRegionStatusTopic"}}
    assert ungated == MESSAGING_AND_STORAGE
    assert {c for k, c in conditions.items() if k not in ungated} == {"CreateService"}
    for name in ungated:  # nothing DeployService=false creates needs what it does not
        assert references(template()["Resources"][name]) <= ungated | set(template()["Parameters"])


def test_container_gets_every_resource_and_stops_after_the_grace_period() -> None:
    (container,) = props("TaskDefinition")["ContainerDefinitions"]
    environment = {
        e["Name"]: e["Value"] for item in container["Environment"] for e in branches(item)
    }
    settings = {f"MODELRUNNER_{name.upper()}" for name in Settings.model_fields}
    assert {n for n in environment if n.startswith("MODELRUNNER_")} <= settings
    assert {
        name: references(environment[name])
        for name in (
            "MODELRUNNER_IMAGE_QUEUE",
            "MODELRUNNER_IMAGE_DLQ",
            "MODELRUNNER_REGION_QUEUE",
            "MODELRUNNER_REGION_DLQ",
            "MODELRUNNER_STATUS_TOPIC_ARN",
            "MODELRUNNER_REGION_STATUS_TOPIC_ARN",
            "MODELRUNNER_JOB_TABLE",
            "MODELRUNNER_STAGING_BUCKET",
            "MODELRUNNER_GRACE_PERIOD_S",
            "MODELRUNNER_VISIBILITY_TIMEOUT_S",
        )
    } == {
        "MODELRUNNER_IMAGE_QUEUE": {"ImageQueue"},
        "MODELRUNNER_IMAGE_DLQ": {"ImageDlq"},
        "MODELRUNNER_REGION_QUEUE": {"RegionQueue"},
        "MODELRUNNER_REGION_DLQ": {"RegionDlq"},
        "MODELRUNNER_STATUS_TOPIC_ARN": {"StatusTopic"},
        "MODELRUNNER_REGION_STATUS_TOPIC_ARN": {"RegionStatusTopic"},
        "MODELRUNNER_JOB_TABLE": {"JobTable"},
        "MODELRUNNER_STAGING_BUCKET": {"StagingBucket"},
        "MODELRUNNER_GRACE_PERIOD_S": {"GracePeriodSeconds"},
        "MODELRUNNER_VISIBILITY_TIMEOUT_S": {"VisibilityTimeout"},
    }
    assert environment["MODELRUNNER_AWS_REGION"] == {"Ref": "AWS::Region"}
    assert environment["MODELRUNNER_HEALTH_FILE"] == "/tmp/modelrunner.alive"
    assert environment["MODELRUNNER_LOG_FORMAT"] == "json"
    assert container["HealthCheck"]["Command"] == ["CMD", "python", "-m", "worker.health"]
    assert "Command" not in container  # the image's own entry point: python -m worker
    grace = template()["Parameters"]["GracePeriodSeconds"]
    assert grace["Default"] == Settings.model_fields["grace_period_s"].default == 100
    assert grace["MaxValue"] < container["StopTimeout"] <= 120
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    task = props("TaskDefinition")
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["NetworkMode"] == "awsvpc"
    breaker = props("Service")["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}


def test_both_queues_scale_the_service_out_and_idle_scales_it_in() -> None:
    policies = resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    alarms = resources("AWS::CloudWatch::Alarm")
    scale_out: dict[str, dict[str, Any]] = {}
    for alarm in alarms.values():
        properties = alarm["Properties"]
        if properties.get("MetricName") != QUEUE_METRIC:
            continue
        (dimension,) = properties["Dimensions"]
        queue = dimension["Value"]["Fn::GetAtt"][0]
        (action,) = properties["AlarmActions"]
        scale_out[queue] = policies[action["Ref"]]["Properties"]
    assert set(scale_out) == {"ImageQueue", "RegionQueue"}
    for policy in scale_out.values():
        assert policy["ScalingTargetId"] == {"Ref": "ScalableTarget"}
        steps = policy["StepScalingPolicyConfiguration"]["StepAdjustments"]
        assert all(s["ScalingAdjustment"] > 0 for s in steps)

    scale_in = props("ScaleInPolicy")["StepScalingPolicyConfiguration"]
    assert all(s["ScalingAdjustment"] < 0 for s in scale_in["StepAdjustments"])
    assert all(
        scale_in["Cooldown"] > p["StepScalingPolicyConfiguration"]["Cooldown"]
        for p in scale_out.values()
    )
    idle = props("QueuesIdleAlarm")
    assert idle["AlarmActions"] == [{"Ref": "ScaleInPolicy"}]
    watched = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for m in idle["Metrics"]
        if "MetricStat" in m
    }
    assert watched == {"ImageQueue", "RegionQueue"}


def test_outputs_name_every_resource_a_worker_or_client_needs() -> None:
    outputs = template()["Outputs"]
    assert set(outputs) == {
        "ImageQueueUrl",
        "ImageDlqUrl",
        "RegionQueueUrl",
        "RegionDlqUrl",
        "StatusTopicArn",
        "RegionStatusTopicArn",
        "JobTableName",
        "ResultBucketName",
        "StagingBucketName",
        "StreamName",
    }
    assert outputs["RegionStatusTopicArn"]["Condition"] == "CreateRegionStatusTopic"
