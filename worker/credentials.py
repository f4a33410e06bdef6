"""Clients under assumed roles: STS AssumeRole, cached per role, refreshed before expiry.

Credentials never leave this module: they are handed to the client constructor only, and
nothing here logs them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    from types_aiobotocore_sts.client import STSClient

log = logging.getLogger(__name__)

SESSION_NAME = "modelrunner"
SESSION_DURATION_S = 3600
REFRESH_MARGIN_S = 300


class RoleError(PermanentError):
    """A role cannot be assumed (denied, malformed ARN)."""


# ``AioSession.create_client``: (service, **kwargs) -> async context manager of a client.
ClientMaker = Callable[..., Any]


@dataclass(slots=True)
class _Entry:
    client: Any
    stack: AsyncExitStack
    expires_at: float


class RoleClients:
    """Clients of any service under any role, one per (service, role) until near expiry."""

    def __init__(self, create_client: ClientMaker, sts: STSClient, region: str) -> None:
        """Assume roles through ``sts``; make clients with ``create_client`` in ``region``."""
        self._create_client = create_client
        self._sts = sts
        self._region = region
        self._entries: dict[tuple[str, str], _Entry] = {}

    async def client(self, service: str, role_arn: str) -> Any:
        """A client of ``service`` acting as ``role_arn``.

        Raises:
            RoleError: If STS refuses the role.
            RetryableError: If STS cannot be reached.
        """
        key = (service, role_arn)
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at - REFRESH_MARGIN_S > time.time():
            return entry.client
        if entry is not None:
            await entry.stack.aclose()
        credentials = await self._assume(role_arn)
        stack = AsyncExitStack()
        client = await stack.enter_async_context(
            self._create_client(
                service,
                region_name=self._region,
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
            )
        )
        self._entries[key] = _Entry(client, stack, credentials["Expiration"].timestamp())
        log.info("using role %s for %s", role_arn, service)
        return client

    async def _assume(self, role_arn: str) -> Any:
        try:
            reply = await self._sts.assume_role(
                RoleArn=role_arn,
                RoleSessionName=SESSION_NAME,
                DurationSeconds=SESSION_DURATION_S,
            )
        except ClientError as err:
            raise RoleError(f"cannot assume role {role_arn}: {err}") from err
        except BotoCoreError as err:
            raise RetryableError(f"STS unavailable assuming {role_arn}: {err}") from err
        return reply["Credentials"]

    async def close(self) -> None:
        """Close every client created."""
        for entry in self._entries.values():
            await entry.stack.aclose()
        self._entries.clear()
