"""The command line's settings and its link to the local stack.

Names come from ``MODELRUNNER_*`` variables, as the worker's do (only those the command line
needs). ``modelrunner local`` writes everything a user needs to reach the local stack to an env
file; every command reads it when it exists, for the variables the environment does not set:
flags win over the environment, which wins over the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from botocore.config import Config
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.contract.parsing import RequestLimits, limits_from

ENV_FILE = Path(".local-stack") / "modelrunner.env"
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
# A client that cannot reach its endpoint says so in seconds, not after botocore's minutes.
AWS_CONFIG = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2})
_LIMITS = RequestLimits()


class ClientSettings(BaseSettings):
    """Where the command line sends requests and reads records (``MODELRUNNER_*``)."""

    model_config = SettingsConfigDict(env_prefix="MODELRUNNER_", frozen=True, extra="ignore")

    aws_region: str = "us-east-1"
    image_queue: str = "ModelRunnerImageQueue"
    job_table: str = "ModelRunnerJobs"
    job_index: str = "job_id-index"
    status_topic_arn: str | None = None
    max_message_bytes: int = _LIMITS.max_message_bytes
    max_tile_size_px: int = _LIMITS.max_tile_size_px
    max_images: int = _LIMITS.max_images
    max_roi_vertices: int = _LIMITS.max_roi_vertices
    max_feature_properties_bytes: int = _LIMITS.max_feature_properties_bytes

    @property
    def request_limits(self) -> RequestLimits:
        """The limits a request is validated against."""
        return limits_from(self)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` allowed, ``#`` comments ignored)."""
    values = {}
    for line in path.read_text().splitlines():
        match = _LINE.match(line.strip())
        if match:
            values[match.group(1)] = match.group(2).strip().strip("'\"")
    return values


def load_env_file(path: Path = ENV_FILE) -> Path | None:
    """Set the file's variables that the environment does not; the path if it was read."""
    if not path.is_file():
        return None
    for key, value in read_env_file(path).items():
        os.environ.setdefault(key, value)
    return path


def write_env_file(values: Mapping[str, str], path: Path = ENV_FILE) -> Path:
    """Write ``export KEY=VALUE`` lines (also a file a shell can ``source``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"export {key}={value}" for key, value in sorted(values.items())]
    path.write_text("# written by `modelrunner local`\n" + "\n".join(lines) + "\n")
    return path
