"""Result objects carry the configured canned ACL (bucket-owner-full-control by default)."""

import asyncio
from typing import Any

import pytest

from worker.adapters.sinks import S3Writer
from worker.settings import Settings


class RecordingS3:
    """Records the keyword arguments of the S3 calls a writer makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("put_object", kwargs))
        return {}

    async def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("create_multipart_upload", kwargs))
        return {"UploadId": "u"}

    async def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("upload_part", kwargs))
        return {"ETag": "e"}

    async def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("complete_multipart_upload", kwargs))
        return {}


def test_default_acl_is_bucket_owner_full_control() -> None:
    assert Settings().s3_output_acl == "bucket-owner-full-control"


@pytest.mark.parametrize(
    ("part_bytes", "creating_call"), [(1 << 20, "put_object"), (8, "create_multipart_upload")]
)
@pytest.mark.parametrize("acl", ["bucket-owner-full-control", ""])
def test_the_call_that_creates_the_object_has_the_acl(
    part_bytes: int, creating_call: str, acl: str
) -> None:
    client = RecordingS3()
    writer = S3Writer(client, "b", "k.geojson", part_bytes=part_bytes, acl=acl)  # type: ignore[arg-type]

    async def write() -> None:
        await writer.write(['{"type":"Feature"}'])
        await writer.close()

    asyncio.run(write())
    (created,) = [kwargs for name, kwargs in client.calls if name == creating_call]
    assert created.get("ACL") == (acl or None)
    assert created["ContentType"] == "application/geo+json"
