"""AWS errors as the service's own: every public call of an adapter class that talks to AWS
raises :class:`AwsError` (retryable) instead of botocore's exceptions, so the core routes on
:mod:`worker.errors` alone and never imports botocore."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import RetryableError

C = TypeVar("C", bound=type)


class AwsError(RetryableError):
    """An AWS call failed (throttled, unavailable, denied, missing): tried again later."""


def describe(err: ClientError | BotoCoreError) -> str:
    """``Code: message`` of a service error, botocore's text otherwise."""
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        return f"{code}: {message}" if message else str(code)
    return str(err)


def _translating(service: str, name: str, call: Callable[..., Awaitable[Any]]) -> Any:
    @functools.wraps(call)
    async def translated(*args: Any, **kwargs: Any) -> Any:
        try:
            return await call(*args, **kwargs)
        except (ClientError, BotoCoreError) as err:
            raise AwsError(f"{service} {name} failed: {describe(err)}") from err

    return translated


def aws_errors(service: str) -> Callable[[C], C]:
    """Class decorator: the class's public coroutine methods raise :class:`AwsError` for
    botocore's errors (conditions a method handles itself never reach it)."""

    def decorate(cls: C) -> C:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, _translating(service, name, member))
        return cls

    return decorate
