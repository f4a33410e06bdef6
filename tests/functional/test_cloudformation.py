"""The template's messaging and storage (DeployService=false) in moto's CloudFormation, with a
real worker pointed at the stack's outputs running one job through them.

The stack has a name of its own and every resource a generated name, so the other tests sharing
the emulator never see it.
"""

import json
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from affine import Affine
from mypy_boto3_cloudformation.type_defs import WaiterConfigTypeDef
from mypy_boto3_kinesis.client import KinesisClient
from mypy_boto3_s3.client import S3Client
from mypy_boto3_sqs.client import SQSClient
from rasterio.crs import CRS

from infra.local_stack import LocalStack
from tests.functional.helpers import StatusLog, write_geotiff

pytestmark = pytest.mark.functional

TEMPLATE = Path(__file__).parents[2] / "infra" / "cloudformation" / "modelrunner.yaml"
UTM = CRS.from_epsg(32618)
TRANSFORM = Affine(0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0)
FAST_WAITER: WaiterConfigTypeDef = {"Delay": 1, "MaxAttempts": 60}


@pytest.fixture
def session() -> boto3.session.Session:
    return boto3.session.Session(region_name="us-east-1")


@pytest.fixture
def outputs(local_stack: LocalStack, session: boto3.session.Session) -> Iterator[dict[str, str]]:
    """A stack of the template (messaging and storage only); deleted afterwards."""
    cloudformation = session.client("cloudformation", endpoint_url=local_stack.endpoint_url)
    name = f"mr-cfn-{uuid.uuid4().hex[:8]}"
    parameters = {
        "DeployService": "false",
        "EnableRegionStatusTopic": "true",
        # AWS-typed list parameters have no default; with DeployService=false they are unused.
        "Subnets": "subnet-0123abcd",
        "SecurityGroups": "sg-0123abcd",
    }
    stack_id = cloudformation.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )["StackId"]
    cloudformation.get_waiter("stack_create_complete").wait(
        StackName=stack_id, WaiterConfig=FAST_WAITER
    )
    (stack,) = cloudformation.describe_stacks(StackName=stack_id)["Stacks"]
    values = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    yield values

    s3 = session.client("s3", endpoint_url=local_stack.endpoint_url)
    for bucket in (values["StagingBucketName"], values["ResultBucketName"]):
        empty_bucket(s3, bucket)
    cloudformation.delete_stack(StackName=stack_id)
    cloudformation.get_waiter("stack_delete_complete").wait(
        StackName=stack_id, WaiterConfig=FAST_WAITER
    )
    # DeletionPolicy Retain: the results outlive the stack, so the test removes them itself.
    buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    assert values["ResultBucketName"] in buckets
    assert values["StagingBucketName"] not in buckets
    s3.delete_bucket(Bucket=values["ResultBucketName"])


def empty_bucket(s3: S3Client, bucket: str) -> None:
    versions = s3.list_object_versions(Bucket=bucket)
    for entry in [*versions.get("Versions", []), *versions.get("DeleteMarkers", [])]:
        s3.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])


def subscribed_queue(
    session: boto3.session.Session, endpoint_url: str, topic_arn: str, name: str
) -> tuple[SQSClient, str]:
    """A queue of the test's own subscribed to ``topic_arn`` (what a status consumer reads)."""
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    sns = session.client("sns", endpoint_url=endpoint_url)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return sqs, url


def stream_records(kinesis: KinesisClient, stream: str) -> list[dict[str, Any]]:
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"]:
            records.append({"partition_key": record["PartitionKey"], **json.loads(record["Data"])})
    return records


def check_resources(session: boto3.session.Session, url: str, outputs: dict[str, str]) -> None:
    """What moto reports of the created resources (it ignores some properties; see below)."""
    sqs = session.client("sqs", endpoint_url=url)
    for queue, dlq in (("ImageQueueUrl", "ImageDlqUrl"), ("RegionQueueUrl", "RegionDlqUrl")):
        attributes = sqs.get_queue_attributes(QueueUrl=outputs[queue], AttributeNames=["All"])[
            "Attributes"
        ]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=outputs[dlq], AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq_arn
        assert int(redrive["maxReceiveCount"]) == 20
        assert attributes["VisibilityTimeout"] == "300"
        assert attributes["SqsManagedSseEnabled"] == "true"

    dynamodb = session.client("dynamodb", endpoint_url=url)
    table = dynamodb.describe_table(TableName=outputs["JobTableName"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "image_id", "KeyType": "HASH"}]
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert indexes["job_id-index"]["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    assert indexes["job_id-index"]["Projection"] == {"ProjectionType": "ALL"}
    assert indexes["active_endpoint-index"]["KeySchema"] == [
        {"AttributeName": "active_endpoint", "KeyType": "HASH"}
    ]
    assert indexes["unfinished-index"]["KeySchema"] == [
        {"AttributeName": "unfinished", "KeyType": "HASH"},
        {"AttributeName": "lease_until", "KeyType": "RANGE"},
    ]
    # moto 5.2's CloudFormation ignores TimeToLiveSpecification (and PITR): it reports TTL
    # DISABLED with no attribute. Real CloudFormation enables it on expire_time.
    ttl = dynamodb.describe_time_to_live(TableName=outputs["JobTableName"])["TimeToLiveDescription"]
    assert ttl.get("AttributeName", "expire_time") == "expire_time"

    s3 = session.client("s3", endpoint_url=url)
    for bucket in (outputs["ResultBucketName"], outputs["StagingBucketName"]):
        (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
            "Rules"
        ]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    kinesis = session.client("kinesis", endpoint_url=url)
    summary = kinesis.describe_stream_summary(StreamName=outputs["StreamName"])
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2


def test_worker_runs_a_job_on_the_stack_resources(
    local_stack: LocalStack,
    session: boto3.session.Session,
    outputs: dict[str, str],
    tmp_path: Path,
) -> None:
    url = local_stack.endpoint_url
    assert {"ImageQueueUrl", "RegionStatusTopicArn", "StreamName"} <= set(outputs)
    check_resources(session, url, outputs)

    prefix = outputs["JobTableName"].split("-JobTable-")[0]
    sqs, status_url = subscribed_queue(session, url, outputs["StatusTopicArn"], f"{prefix}-st")
    _, region_status_url = subscribed_queue(
        session, url, outputs["RegionStatusTopicArn"], f"{prefix}-rst"
    )
    worker = local_stack.start_worker(
        f"worker-{prefix}",
        MODELRUNNER_IMAGE_QUEUE=outputs["ImageQueueUrl"],
        MODELRUNNER_IMAGE_DLQ=outputs["ImageDlqUrl"],
        MODELRUNNER_REGION_QUEUE=outputs["RegionQueueUrl"],
        MODELRUNNER_REGION_DLQ=outputs["RegionDlqUrl"],
        MODELRUNNER_STATUS_TOPIC_ARN=outputs["StatusTopicArn"],
        MODELRUNNER_REGION_STATUS_TOPIC_ARN=outputs["RegionStatusTopicArn"],
        MODELRUNNER_JOB_TABLE=outputs["JobTableName"],
        MODELRUNNER_STAGING_BUCKET=outputs["StagingBucketName"],
        # One 512 px tile per region: three of the four regions go through the region queue.
        MODELRUNNER_REGION_SIZE_PX="512",
    )
    try:
        pixels = np.full((1, 600, 600), 150, dtype=np.uint8)
        image = write_geotiff(tmp_path / "cfn.tif", pixels, TRANSFORM, UTM)
        s3 = session.client("s3", endpoint_url=url)
        key = f"images/{prefix}/cfn.tif"
        s3.upload_file(str(image), local_stack.resources.image_bucket, key)
        image_url = f"s3://{local_stack.resources.image_bucket}/{key}"
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        request = {
            "jobId": job_id,
            "imageUrls": [image_url],
            "outputs": [
                {"type": "S3", "bucket": outputs["ResultBucketName"], "prefix": "out"},
                {"type": "Kinesis", "stream": outputs["StreamName"], "batchSize": 3},
            ],
            "imageProcessor": {"name": local_stack.model_url, "type": "HTTP_ENDPOINT"},
            "imageProcessorTileSize": 512,
            "imageProcessorTileOverlap": 64,
        }
        sqs.send_message(QueueUrl=outputs["ImageQueueUrl"], MessageBody=json.dumps(request))

        final = StatusLog(sqs, status_url).wait_terminal(job_id)[-1]
        assert final.attributes["status"] == "SUCCESS", final.message
        assert final.attributes["failed_tiles"] == "[]"
        assert final.attributes["failed_tile_count"] == "0"
        regions = StatusLog(sqs, region_status_url).wait_terminal(job_id, count=4)
        assert sorted(s.attributes["region_id"] for s in regions) == ["1", "2", "3", "4"]
        assert {s.attributes["status"] for s in regions} == {"SUCCESS"}

        body = s3.get_object(Bucket=outputs["ResultBucketName"], Key=f"out/{job_id}.geojson")
        features = json.loads(body["Body"].read())["features"]
        assert len(features) == 4  # one centre box per 512 px tile of the 2 x 2 grid
        assert {f["properties"]["inferenceMetadata"]["jobId"] for f in features} == {job_id}

        kinesis = session.client("kinesis", endpoint_url=url)
        records = stream_records(kinesis, outputs["StreamName"])
        assert {r["partition_key"] for r in records} == {job_id}
        assert all(len(r["features"]) <= 3 for r in records)
        assert sum(len(r["features"]) for r in records) == 4

        item = session.client("dynamodb", endpoint_url=url).get_item(
            TableName=outputs["JobTableName"],
            Key={"image_id": {"S": f"{job_id}:{image_url}"}},
            ConsistentRead=True,
        )["Item"]
        assert item["status"] == {"S": "SUCCESS"}
        assert "expire_time" in item
        # Finalising removed the staged regions; nothing was dead-lettered.
        assert s3.list_objects_v2(Bucket=outputs["StagingBucketName"])["KeyCount"] == 0
        for dlq in (outputs["ImageDlqUrl"], outputs["RegionDlqUrl"]):
            attributes = sqs.get_queue_attributes(
                QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            assert attributes["ApproximateNumberOfMessages"] == "0"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            assert worker.wait(30) == 0
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
        for queue_url in (status_url, region_status_url):
            sqs.delete_queue(QueueUrl=queue_url)
