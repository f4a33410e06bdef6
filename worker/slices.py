"""The slice of the settings each component is told, made once where the program starts."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from worker.finaliser import FinalisingSettings
from worker.loop import LoopSettings
from worker.runner import RunningSettings
from worker.settings import Settings
from worker.settling import HandlingSettings

S = TypeVar("S")


def slice_of(cls: type[S], settings: Settings, **values: Any) -> S:
    """A component's slice of the settings: the fields of ``cls`` read from ``settings`` by
    name, ``values`` for the fields named otherwise there."""
    fields: Any = dataclasses.fields  # typed for instances; a dataclass type is what it reads
    names = {field.name for field in fields(cls)} - values.keys()
    return cls(**{name: getattr(settings, name) for name in names}, **values)


def loop_settings(settings: Settings) -> LoopSettings:
    """The loop's slice of the settings."""
    return slice_of(LoopSettings, settings)


def handling_settings(settings: Settings) -> HandlingSettings:
    """The message handlers' slice of the settings."""
    return slice_of(
        HandlingSettings,
        settings,
        image_schemes=settings.allowed_image_schemes,
        endpoint_hosts=settings.allowed_endpoint_hosts,
    )


def running_settings(settings: Settings) -> RunningSettings:
    """The region runner's slice of the settings."""
    return slice_of(RunningSettings, settings)


def finalising_settings(settings: Settings, worker_id: str) -> FinalisingSettings:
    """The finaliser's slice of the settings; leases last one visibility timeout."""
    return slice_of(
        FinalisingSettings, settings, lease_s=settings.visibility_timeout_s, worker_id=worker_id
    )
