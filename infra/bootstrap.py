"""Create every resource the worker uses, given an endpoint URL (moto or LocalStack).

Idempotent: existing resources are reused. Synchronous boto3; this is set-up code.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3

from worker.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sns.client import SNSClient
    from mypy_boto3_sqs.client import SQSClient

DEFAULT_REDRIVE_COUNT = 20  # above the worker's own limit (worker/poison.py)
JOB_INDEX = Settings.model_fields["job_index"].default
ENDPOINT_INDEX = Settings.model_fields["endpoint_index"].default
UNFINISHED_INDEX = Settings.model_fields["unfinished_index"].default


@dataclass(frozen=True, slots=True)
class ResourceNames:
    """Names of the resources; the defaults match :class:`worker.settings.Settings`."""

    image_queue: str = "ModelRunnerImageQueue"
    region_queue: str = "ModelRunnerRegionQueue"
    status_queue: str = "ModelRunnerStatusQueue"
    job_table: str = "ModelRunnerJobs"
    status_topic: str = "ModelRunnerStatus"
    region_status_topic: str = "ModelRunnerRegionStatus"
    region_status_queue: str = "ModelRunnerRegionStatusQueue"
    bucket: str = "modelrunner-results"
    image_bucket: str = "modelrunner-images"
    staging_bucket: str = "modelrunner-staging"
    staging_expiry_days: int = 7
    stream: str = "modelrunner-results"
    stream_shards: int = 2
    visibility_timeout_s: int = 300
    redrive_count: int = DEFAULT_REDRIVE_COUNT


@dataclass(frozen=True, slots=True)
class Resources:
    """Where the created resources are."""

    image_queue_url: str
    image_dlq_url: str
    region_queue_url: str
    region_dlq_url: str
    status_queue_url: str
    status_topic_arn: str
    region_status_queue_url: str
    region_status_topic_arn: str
    job_table: str
    bucket: str
    image_bucket: str
    staging_bucket: str
    stream: str

    def worker_environment(self) -> dict[str, str]:
        """``MODELRUNNER_*`` variables that point a worker at these resources."""
        return {
            "MODELRUNNER_IMAGE_QUEUE": self.image_queue_url,
            "MODELRUNNER_IMAGE_DLQ": self.image_dlq_url,
            "MODELRUNNER_REGION_QUEUE": self.region_queue_url,
            "MODELRUNNER_REGION_DLQ": self.region_dlq_url,
            "MODELRUNNER_STATUS_TOPIC_ARN": self.status_topic_arn,
            "MODELRUNNER_REGION_STATUS_TOPIC_ARN": self.region_status_topic_arn,
            "MODELRUNNER_JOB_TABLE": self.job_table,
            "MODELRUNNER_STAGING_BUCKET": self.staging_bucket,
        }


def _queue_with_dlq(sqs: SQSClient, name: str, names: ResourceNames) -> tuple[str, str]:
    dlq_url = sqs.create_queue(QueueName=f"{name}DLQ")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(names.redrive_count)}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(names.visibility_timeout_s),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return url, dlq_url


def _topic_with_queue(sqs: SQSClient, sns: SNSClient, topic: str, queue: str) -> tuple[str, str]:
    """A topic and a queue subscribed to it (what a status consumer would read)."""
    topic_arn = sns.create_topic(Name=topic)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return topic_arn, queue_url


def provision(
    endpoint_url: str, region: str = "us-east-1", names: ResourceNames | None = None
) -> Resources:
    """Create queues (with DLQs and redrive), tables, topic (+ subscribed queue), bucket, stream."""
    names = names or ResourceNames()
    session = boto3.session.Session(region_name=region)
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    image_url, image_dlq = _queue_with_dlq(sqs, names.image_queue, names)
    region_url, region_dlq = _queue_with_dlq(sqs, names.region_queue, names)

    sns = session.client("sns", endpoint_url=endpoint_url)
    topic_arn, status_url = _topic_with_queue(sqs, sns, names.status_topic, names.status_queue)
    region_topic_arn, region_status_url = _topic_with_queue(
        sqs, sns, names.region_status_topic, names.region_status_queue
    )

    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    existing = set(dynamodb.list_tables()["TableNames"])
    if names.job_table not in existing:
        dynamodb.create_table(
            TableName=names.job_table,
            AttributeDefinitions=[
                {"AttributeName": "image_id", "AttributeType": "S"},
                {"AttributeName": "job_id", "AttributeType": "S"},
                {"AttributeName": "active_endpoint", "AttributeType": "S"},
                {"AttributeName": "unfinished", "AttributeType": "S"},
                {"AttributeName": "lease_until", "AttributeType": "N"},
            ],
            KeySchema=[{"AttributeName": "image_id", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": JOB_INDEX,
                    "KeySchema": [{"AttributeName": "job_id", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                },
                {  # sparse: only images that have started and not ended carry the key
                    "IndexName": ENDPOINT_INDEX,
                    "KeySchema": [{"AttributeName": "active_endpoint", "KeyType": "HASH"}],
                    "Projection": {
                        "ProjectionType": "INCLUDE",
                        "NonKeyAttributes": ["endpoint_load", "job_id", "deadline"],
                    },
                },
                {  # sparse: only claimed images not yet published and cleaned up (the sweep)
                    "IndexName": UNFINISHED_INDEX,
                    "KeySchema": [
                        {"AttributeName": "unfinished", "KeyType": "HASH"},
                        {"AttributeName": "lease_until", "KeyType": "RANGE"},
                    ],
                    "Projection": {
                        "ProjectionType": "INCLUDE",
                        "NonKeyAttributes": ["job_id", "image_url"],
                    },
                },
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=names.job_table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expire_time"},
        )

    s3 = session.client("s3", endpoint_url=endpoint_url)
    buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in {names.bucket, names.image_bucket, names.staging_bucket} - buckets:
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_lifecycle_configuration(
        Bucket=names.staging_bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "expire-staged-regions",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "Expiration": {"Days": names.staging_expiry_days},
                }
            ]
        },
    )

    kinesis = session.client("kinesis", endpoint_url=endpoint_url)
    if names.stream not in kinesis.list_streams()["StreamNames"]:
        kinesis.create_stream(StreamName=names.stream, ShardCount=names.stream_shards)

    return Resources(
        image_queue_url=image_url,
        image_dlq_url=image_dlq,
        region_queue_url=region_url,
        region_dlq_url=region_dlq,
        status_queue_url=status_url,
        status_topic_arn=topic_arn,
        region_status_queue_url=region_status_url,
        region_status_topic_arn=region_topic_arn,
        job_table=names.job_table,
        bucket=names.bucket,
        image_bucket=names.image_bucket,
        staging_bucket=names.staging_bucket,
        stream=names.stream,
    )


def main() -> None:
    """``python -m infra.bootstrap ENDPOINT_URL``: provision and print the worker variables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("endpoint_url")
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()
    resources = provision(args.endpoint_url, args.region)
    for key, value in resources.worker_environment().items():
        print(f"export {key}={value}")  # noqa: T201 - shell output


if __name__ == "__main__":
    main()
