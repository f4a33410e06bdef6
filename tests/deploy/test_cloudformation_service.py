"""The CloudFormation template: the ECS service and the outputs a worker or client needs.

The task role (exactly the worker's calls, on the stack's resources), what exists without the
service, the container's settings and stop timeout, and the queue-driven scaling.
"""

from typing import Any

from tests.deploy.cloudformation import (
    as_list,
    branches,
    props,
    references,
    resources,
    task_role_statements,
    template,
)
from worker.settings import Settings

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
