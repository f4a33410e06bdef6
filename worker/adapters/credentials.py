"""Clients and image-read keys under assumed roles: STS AssumeRole, cached per role,
refreshed before expiry.

One STS cache serves both: the clients of any service under a role, and the plain keys an
image is read with through GDAL (``imageReadRole``). Credentials leave this module only to a
client constructor or as :class:`tiling.gdalenv.ReadCredentials` (whose ``repr`` hides them),
and nothing here logs them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from tiling.gdalenv import ReadCredentials
from worker.errors import RetryableError, RoleError

if TYPE_CHECKING:
    from types_aiobotocore_sts.client import STSClient

log = logging.getLogger(__name__)

SESSION_NAME = "modelrunner"
SESSION_DURATION_S = 3600
REFRESH_MARGIN_S = 300
# Keys handed to GDAL live in the handles opened with them, for a whole region's reads: they
# are taken with at least this long left (a region's deadline is its visibility timeout).
READ_VALIDITY_S = 1800


# ``AioSession.create_client``: (service, **kwargs) -> async context manager of a client.
ClientMaker = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class _Keys:
    credentials: ReadCredentials
    expires_at: float


@dataclass(slots=True)
class _Entry:
    client: Any
    stack: AsyncExitStack
    expires_at: float


class RoleClients:
    """Clients of any service under any role, one per (service, role) until near expiry, and
    the role's keys themselves for image reads; one STS call per role until near expiry."""

    def __init__(
        self,
        create_client: ClientMaker,
        sts: STSClient,
        region: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Assume roles through ``sts``; make clients with ``create_client`` in ``region``;
        tell the time (seconds since the epoch) with ``clock``."""
        self._create_client = create_client
        self._sts = sts
        self._region = region
        self._clock = clock
        self._keys: dict[str, _Keys] = {}
        self._entries: dict[tuple[str, str], _Entry] = {}

    async def read_credentials(self, role_arn: str) -> ReadCredentials:
        """Keys of ``role_arn`` with at least ``READ_VALIDITY_S`` left, for reading an image.

        Raises:
            RoleError: If STS refuses the role.
            RetryableError: If STS cannot be reached.
        """
        return (await self._role_keys(role_arn, READ_VALIDITY_S)).credentials

    async def _role_keys(self, role_arn: str, min_valid_s: float) -> _Keys:
        keys = self._keys.get(role_arn)
        if keys is None or keys.expires_at - min_valid_s <= self._clock():
            keys = await self._assume(role_arn)
            self._keys[role_arn] = keys
            log.info("assumed role %s", role_arn)
        return keys

    async def client(self, service: str, role_arn: str) -> Any:
        """A client of ``service`` acting as ``role_arn``.

        Raises:
            RoleError: If STS refuses the role.
            RetryableError: If STS cannot be reached.
        """
        key = (service, role_arn)
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at - REFRESH_MARGIN_S > self._clock():
            return entry.client
        if entry is not None:
            await entry.stack.aclose()
            del self._entries[key]
        keys = await self._role_keys(role_arn, REFRESH_MARGIN_S)
        stack = AsyncExitStack()
        client = await stack.enter_async_context(
            self._create_client(
                service,
                region_name=self._region,
                aws_access_key_id=keys.credentials.access_key_id,
                aws_secret_access_key=keys.credentials.secret_access_key,
                aws_session_token=keys.credentials.session_token,
            )
        )
        self._entries[key] = _Entry(client, stack, keys.expires_at)
        log.info("using role %s for %s", role_arn, service)
        return client

    async def _assume(self, role_arn: str) -> _Keys:
        try:
            reply = await self._sts.assume_role(
                RoleArn=role_arn,
                RoleSessionName=SESSION_NAME,
                DurationSeconds=SESSION_DURATION_S,
            )
        except ClientError as err:
            raise RoleError(role_arn, str(err)) from err
        except ParamValidationError as err:  # a malformed ARN, refused before sending
            raise RoleError(role_arn, str(err).replace("\n", " ")) from err
        except BotoCoreError as err:
            raise RetryableError(f"STS unavailable assuming {role_arn}: {err}") from err
        credentials = reply["Credentials"]
        return _Keys(
            ReadCredentials(
                credentials["AccessKeyId"],
                credentials["SecretAccessKey"],
                credentials["SessionToken"],
            ),
            credentials["Expiration"].timestamp(),
        )

    async def close(self) -> None:
        """Close every client created."""
        for entry in self._entries.values():
            await entry.stack.aclose()
        self._entries.clear()
