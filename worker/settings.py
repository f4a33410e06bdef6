"""Settings: one object, built once where the program starts, from ``MODELRUNNER_*`` variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.contract.parsing import RequestLimits, limits_from
from worker.contract.regions import MAX_SQS_MESSAGE_BYTES, REGION_ENVELOPE_BYTES

MAX_REQUEST_BYTES = MAX_SQS_MESSAGE_BYTES - REGION_ENVELOPE_BYTES


class Settings(BaseSettings):
    """Worker configuration (see the README table)."""

    model_config = SettingsConfigDict(env_prefix="MODELRUNNER_", frozen=True)

    aws_region: str = "us-east-1"
    image_queue: str = "ModelRunnerImageQueue"
    image_dlq: str = "ModelRunnerImageQueueDLQ"
    region_queue: str = "ModelRunnerRegionQueue"
    region_dlq: str = "ModelRunnerRegionQueueDLQ"
    job_table: str = "ModelRunnerJobs"
    job_index: str = "job_id-index"
    status_topic_arn: str | None = None
    region_status_topic_arn: str | None = None
    staging_bucket: str = "modelrunner-staging"
    staging_prefix: str = "staging"
    endpoint_concurrency: Annotated[int, Field(ge=1, le=512)] = 16
    # "gradient": the limit follows each endpoint's latency between the floor and
    # endpoint_concurrency; "aimd": it stays at endpoint_concurrency unless throttled.
    endpoint_limiter: Literal["gradient", "aimd"] = "gradient"
    endpoint_concurrency_floor: Annotated[int, Field(ge=1, le=512)] = 2
    encode_threads: Annotated[int, Field(ge=1, le=64)] = 2
    region_size_px: Annotated[int, Field(ge=256)] = 10240
    poll_wait_s: Annotated[int, Field(ge=0, le=20)] = 5
    region_poll_wait_s: Annotated[int, Field(ge=0, le=20)] = 1
    max_in_flight: Annotated[int, Field(ge=1, le=64)] = 2
    grace_period_s: Annotated[float, Field(ge=0)] = 100.0
    job_deadline_s: Annotated[float, Field(gt=0)] = 6 * 3600.0
    max_receives: Annotated[int, Field(ge=1)] = 4
    log_format: Literal["json", "text"] = "json"
    metrics: bool = True
    health_file: str | None = None
    health_max_age_s: Annotated[float, Field(gt=0)] = 120.0
    visibility_timeout_s: Annotated[int, Field(ge=5, le=43200)] = 300
    max_attempts: Annotated[int, Field(ge=1)] = 3
    retry_delay_s: Annotated[int, Field(ge=0, le=900)] = 10
    progress_interval_s: Annotated[float, Field(gt=0)] = 5.0
    endpoint_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    tile_retries: Annotated[int, Field(ge=0, le=10)] = 3
    job_record_ttl_days: Annotated[int, Field(ge=1)] = 7
    gdal_cache_mb: Annotated[int, Field(ge=8)] = 64
    image_read_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # s3:// images: a region's bytes fetched ahead of the encoders in large ranged GETs.
    read_ahead: bool = True
    read_ahead_mb: Annotated[int, Field(ge=8)] = 96
    read_range_mb: Annotated[int, Field(ge=1, le=256)] = 16
    read_requests: Annotated[int, Field(ge=1, le=64)] = 4
    dem_url: str | None = None
    image_url_schemes: str = "s3"
    endpoint_hosts: str = ""
    max_reply_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    max_reply_features: Annotated[int, Field(ge=1)] = 100_000
    max_message_bytes: Annotated[int, Field(ge=1024, le=MAX_REQUEST_BYTES)] = MAX_REQUEST_BYTES
    max_tile_size_px: Annotated[int, Field(ge=16)] = 4096
    max_images: Annotated[int, Field(ge=1)] = 100
    max_image_pixels: Annotated[int, Field(ge=1)] = 5_000_000_000
    max_tile_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    capacity_throttling: bool = True
    capacity_target_percent: Annotated[float, Field(gt=0, le=1000)] = 100.0
    default_instance_concurrency: Annotated[int, Field(ge=1)] = 2
    http_endpoint_capacity: Annotated[int, Field(ge=1)] = 64
    capacity_retry_s: Annotated[int, Field(ge=0, le=900)] = 30
    endpoint_index: str = "active_endpoint-index"
    unfinished_index: str = "unfinished-index"
    sweep_interval_s: Annotated[float, Field(gt=0, le=60)] = 30.0
    kinesis_request_records: Annotated[int, Field(ge=1, le=500)] = 500
    max_roi_vertices: Annotated[int, Field(ge=4)] = 10_000
    max_feature_properties_bytes: Annotated[int, Field(ge=2)] = 64 * 1024
    # Canned ACL of result objects ("" for none: buckets that disable ACLs reject any but the
    # owner's); the default lets a result bucket in another account own what it receives.
    s3_output_acl: Literal["", "bucket-owner-full-control", "bucket-owner-read", "private"] = (
        "bucket-owner-full-control"
    )

    @property
    def allowed_image_schemes(self) -> frozenset[str]:
        """Image URL schemes requests may use (``file`` = local paths)."""
        return frozenset(p.strip().lower() for p in self.image_url_schemes.split(",") if p.strip())

    @property
    def allowed_endpoint_hosts(self) -> frozenset[str]:
        """Hosts (or host:port) HTTP model endpoints may be on."""
        return frozenset(p.strip().lower() for p in self.endpoint_hosts.split(",") if p.strip())

    @property
    def request_limits(self) -> RequestLimits:
        """The limits a request is validated against."""
        return limits_from(self)
