"""The slice of the settings each component is told, made once where the program starts."""

from __future__ import annotations

from worker.finaliser import FinalisingSettings
from worker.handlers import HandlingSettings
from worker.loop import LoopSettings
from worker.runner import RunningSettings
from worker.settings import Settings


def loop_settings(settings: Settings) -> LoopSettings:
    """The loop's slice of the settings."""
    return LoopSettings(
        max_in_flight=settings.max_in_flight,
        poll_wait_s=settings.poll_wait_s,
        region_poll_wait_s=settings.region_poll_wait_s,
        visibility_timeout_s=settings.visibility_timeout_s,
        grace_period_s=settings.grace_period_s,
        health_file=settings.health_file,
        sweep_interval_s=settings.sweep_interval_s,
    )


def handling_settings(settings: Settings) -> HandlingSettings:
    """The message handlers' slice of the settings."""
    return HandlingSettings(
        request_limits=settings.request_limits,
        image_schemes=settings.allowed_image_schemes,
        endpoint_hosts=settings.allowed_endpoint_hosts,
        max_receives=settings.max_receives,
        max_attempts=settings.max_attempts,
        retry_delay_s=settings.retry_delay_s,
        capacity_retry_s=settings.capacity_retry_s,
    )


def running_settings(settings: Settings) -> RunningSettings:
    """The region runner's slice of the settings."""
    return RunningSettings(
        job_deadline_s=settings.job_deadline_s,
        endpoint_concurrency=settings.endpoint_concurrency,
        progress_interval_s=settings.progress_interval_s,
    )


def finalising_settings(settings: Settings, worker_id: str) -> FinalisingSettings:
    """The finaliser's slice of the settings; leases last one visibility timeout."""
    return FinalisingSettings(
        lease_s=settings.visibility_timeout_s,
        job_deadline_s=settings.job_deadline_s,
        worker_id=worker_id,
    )
