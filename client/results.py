"""``modelrunner results`` and ``modelrunner preview``: a job's GeoJSON outputs, and a picture
of an image with its detections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from client.preview import preview
from worker.contract.records import JobRecordView

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client


class NoResultsError(ValueError):
    """The job has no S3 results to give: it failed, or has not ended."""


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def s3_outputs(views: list[JobRecordView]) -> list[tuple[JobRecordView, str]]:
    """Each image's S3 outputs.

    Raises:
        NoResultsError: Saying why, if there are none.
    """
    found = [(v, o) for v in views for o in v.record.outputs if o.startswith("s3://")]
    if found:
        return found
    job_id = views[0].job_id
    failed = [v for v in views if v.status.value == "FAILED"]
    if failed:
        reason = failed[0].record.reason or "no reason recorded"
        raise NoResultsError(f"job {job_id} ended FAILED: {reason}; it has no results")
    if not all(v.ended for v in views):
        raise NoResultsError(f"job {job_id} is still IN_PROGRESS: no results yet")
    raise NoResultsError(f"job {job_id} has no S3 output (its outputs: Kinesis only?)")


def download_results(s3: S3Client, views: list[JobRecordView], directory: Path) -> list[str]:
    """Every S3 output of the job into ``directory``; a line per file."""
    lines = []
    directory.mkdir(parents=True, exist_ok=True)
    for _, url in s3_outputs(views):
        bucket, key = split_s3_url(url)
        target = directory / Path(key).name
        s3.download_file(bucket, key, str(target))
        lines.append(f"{url} -> {target}")
    return lines


def write_preview(s3: S3Client, views: list[JobRecordView], path: str, max_side_px: int) -> str:
    """The first image with an S3 result, its detections' boxes drawn; the line to show."""
    view, url = s3_outputs(views)[0]
    bucket, key = split_s3_url(url)
    collection = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    count = preview(view.image_url, collection, path, max_side_px)
    return f"wrote {path}: {view.image_url} with {count} boxes"
