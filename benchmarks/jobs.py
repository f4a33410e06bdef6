"""Submitting one job to a local stack and waiting for it: what every benchmark does."""

from __future__ import annotations

from typing import Any

import boto3

from client.submit import submit, wait_for_job
from infra.local_stack import LocalStack
from worker.contract.records import JobRecordView

POLL_INTERVAL_S = 0.05  # the time from the last status to seeing it counts against the job


def run_job(
    stack: LocalStack, session: boto3.session.Session, request: dict[str, Any]
) -> list[JobRecordView]:
    """Submit ``request`` to the stack's image queue; the records of its images once every
    one has ended (an hour at most)."""
    parsed = submit(
        session.client("sqs", endpoint_url=stack.endpoint_url),
        stack.resources.image_queue_url,
        request,
    )
    return wait_for_job(
        session.client("dynamodb", endpoint_url=stack.endpoint_url),
        stack.resources.job_table,
        parsed,
        3600,
        lambda _line: None,
        poll_interval_s=POLL_INTERVAL_S,
    )
