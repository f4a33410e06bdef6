"""Temporary uploads and results of the model runner: S3 objects behind presigned URLs."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from models.bioimageio.errors import ApiError
from models.bioimageio.inputs import FILE_TYPES

UPLOAD_TYPES = FILE_TYPES
UPLOAD_TTL_S = 3600.0
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


class UploadStore:
    """Temporary files in one S3 prefix, written and read through presigned URLs.

    Keys are ``<prefix><uuid><type>``; nothing outside that pattern is ever read, so a caller
    cannot point ``infer`` at other objects in the bucket. A file older than ``ttl_s`` has
    expired (a bucket lifecycle rule should delete the prefix after a day).
    """

    def __init__(
        self, bucket: str, prefix: str = "temp/", ttl_s: float = UPLOAD_TTL_S, s3: Any = None
    ) -> None:
        """Keep files in ``s3://bucket/prefix`` for ``ttl_s`` seconds."""
        self.bucket = bucket
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._s3 = s3 or boto3.client("s3")
        types = "|".join(re.escape(t) for t in UPLOAD_TYPES)
        # Dashed UUIDs (as the public service hands out); 32 hex digits from older versions.
        uuid_text = r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})"
        self._pattern = re.compile(rf"{re.escape(prefix)}{uuid_text}({types})")

    def new_upload(self, file_type: str) -> dict[str, str]:
        """A presigned PUT URL for a new file and the path to give ``infer``.

        Raises:
            ApiError: 400 for a file type the service does not take.
        """
        if file_type not in UPLOAD_TYPES:
            raise ApiError(400, f"file_type: {file_type!r} is not one of {', '.join(UPLOAD_TYPES)}")
        key = f"{self.prefix}{uuid.uuid4()}{file_type}"
        url = self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=int(self.ttl_s),
        )
        return {"upload_url": url, "file_path": key}

    def read(self, file_path: str) -> bytes:
        """The bytes of an uploaded file.

        Raises:
            ApiError: 400 for a path this service did not hand out, 404 when nothing was
                uploaded there, 410 when the upload has expired, 502 when S3 fails.
        """
        if not self._pattern.fullmatch(file_path):
            raise ApiError(
                400,
                f"inputs: {file_path!r} is not a file path from get_upload_url"
                f" ({self.prefix}<id><type>)",
            )
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=file_path)
            if head["ContentLength"] > MAX_UPLOAD_BYTES:
                raise ApiError(413, f"inputs: {file_path} is larger than {MAX_UPLOAD_BYTES} bytes")
            age = (datetime.now(UTC) - head["LastModified"]).total_seconds()
            if age > self.ttl_s:
                raise ApiError(
                    410,
                    f"inputs: the upload {file_path} expired {age - self.ttl_s:.0f} s ago (uploads"
                    f" are kept {self.ttl_s:.0f} s); upload it again with a new get_upload_url",
                )
            body: bytes = self._s3.get_object(Bucket=self.bucket, Key=file_path)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise ApiError(
                    404,
                    f"inputs: nothing was uploaded to {file_path} (PUT the file to the"
                    " upload_url first)",
                ) from None
            raise ApiError(502, f"cannot read {file_path} from storage: {err}") from err
        except BotoCoreError as err:
            raise ApiError(502, f"cannot read {file_path} from storage: {err}") from err
        return body

    def publish(self, data: bytes, file_type: str = ".npy") -> str:
        """Store a result; a presigned GET URL for it, valid for ``ttl_s``.

        Raises:
            ApiError: 502 when S3 fails.
        """
        key = f"{self.prefix}{uuid.uuid4()}{file_type}"
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as err:
            raise ApiError(502, f"cannot store the result: {err}") from err
        url: str = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(self.ttl_s)
        )
        return url
