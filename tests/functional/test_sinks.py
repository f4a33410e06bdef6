"""The S3 and Kinesis writers against the real emulator."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.functional.helpers import Stack
from worker.adapters.sinks import KINESIS_MAX_RECORD_BYTES, KinesisSink, S3Sink, S3Writer

pytestmark = pytest.mark.functional


def feature(i: int, pad: int = 0) -> str:
    return json.dumps(
        {"type": "Feature", "geometry": None, "properties": {"i": i, "pad": "x" * pad}}
    )


def run_with_clients(stack: Stack, body: Callable[[Any, Any], Awaitable[None]]) -> None:
    async def main() -> None:
        session = get_session()
        url = stack.local.endpoint_url
        async with (
            session.create_client("s3", endpoint_url=url, region_name="us-east-1") as s3,
            session.create_client("kinesis", endpoint_url=url, region_name="us-east-1") as kinesis,
        ):
            await body(s3, kinesis)

    asyncio.run(main())


def test_s3_multipart_stream(stack: Stack) -> None:
    bucket = stack.local.resources.bucket
    features = [feature(i, pad=1000) for i in range(12_000)]  # about 12 MiB: three parts

    async def body(s3: Any, _: Any) -> None:
        writer = S3Writer(s3, bucket, "sinks/multipart.geojson", part_bytes=5 * 1024 * 1024)
        for start in range(0, len(features), 1000):
            await writer.write(features[start : start + 1000])
        assert await writer.close() == f"s3://{bucket}/sinks/multipart.geojson"
        empty = await S3Sink(s3, bucket, "sinks/").open("job", "empty.geojson")
        await empty.close()

    run_with_clients(stack, body)
    document = json.loads(
        stack.s3.get_object(Bucket=bucket, Key="sinks/multipart.geojson")["Body"].read()
    )
    assert [f["properties"]["i"] for f in document["features"]] == list(range(12_000))
    empty = json.loads(stack.s3.get_object(Bucket=bucket, Key="sinks/empty.geojson")["Body"].read())
    assert empty == {"type": "FeatureCollection", "features": []}


def test_kinesis_batches_limits_and_shards(stack: Stack) -> None:
    job_id = "sinks-kinesis"
    small = [feature(i) for i in range(25)]
    large = [feature(100 + i, pad=300_000) for i in range(6)]
    oversized = [feature(999, pad=KINESIS_MAX_RECORD_BYTES)]

    async def body(_: Any, kinesis: Any) -> None:
        writer = await KinesisSink(kinesis, stack.local.resources.stream, 10).open(job_id, "x")
        await writer.write(small)
        await writer.write(large + oversized)
        await writer.close()

    run_with_clients(stack, body)
    records = stack.kinesis_records(job_id)
    sizes = [len(json.dumps(r["data"])) for r in records]
    assert max(sizes) <= KINESIS_MAX_RECORD_BYTES
    ids = sorted(f["properties"]["i"] for r in records for f in r["data"]["features"])
    assert ids == list(range(25)) + list(range(100, 106))  # the oversized one is reported, skipped
    assert all(len(r["data"]["features"]) <= 10 for r in records)
    assert len({r["shard"] for r in records}) == 2  # spread over both shards


@pytest.mark.parametrize("size", [10, 12_000])  # one PUT, and a multipart upload
def test_s3_objects_carry_the_canned_acl(stack: Stack, size: int) -> None:
    # The worker's default is bucket-owner-full-control, which moto accepts but does not show
    # in the object's grants; public-read does show, so it proves the ACL reaches S3.
    bucket = stack.local.resources.bucket
    key = f"sinks/acl-{size}.geojson"

    async def body(s3: Any, _: Any) -> None:
        writer = S3Writer(s3, bucket, key, part_bytes=5 * 1024 * 1024, acl="public-read")
        await writer.write([feature(i, pad=1000) for i in range(size)])
        await writer.close()
        default = await S3Sink(s3, bucket, "sinks", "bucket-owner-full-control").open(
            "j", "d.geojson"
        )
        await default.write([feature(1)])
        await default.close()

    run_with_clients(stack, body)
    grants = stack.s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    assert any(
        g["Grantee"].get("URI", "").endswith("/global/AllUsers") and g["Permission"] == "READ"
        for g in grants
    )
    assert json.loads(stack.s3.get_object(Bucket=bucket, Key="sinks/d.geojson")["Body"].read())[
        "features"
    ]
