"""The keys a request's images are read with (``imageReadRole``)."""

from __future__ import annotations

from typing import Protocol

from tiling.gdalenv import ReadCredentials
from worker.errors import ROLE_ARN, RoleError


class ReadCredentialSource(Protocol):
    """Keys of a role to read images with (``imageReadRole``)."""

    async def read_credentials(self, role_arn: str) -> ReadCredentials:
        """Keys of ``role_arn``, valid long enough for a region's reads.

        Raises:
            RoleError: If the role cannot be assumed.
            RetryableError: If the role's keys cannot be had now.
        """
        ...


async def image_read_credentials(
    source: ReadCredentialSource | None, role_arn: str | None
) -> ReadCredentials | None:
    """The keys to read a request's images with: its ``imageReadRole``'s, None without one.

    Raises:
        RoleError: Naming ``imageReadRole``, if the role cannot be assumed (or there is no
            ``source`` to assume it with).
        RetryableError: If STS cannot be reached.
    """
    if role_arn is None:
        return None
    if not ROLE_ARN.fullmatch(role_arn):
        raise RoleError(
            role_arn, "not an IAM role ARN (arn:aws:iam::<account>:role/<name>)", "imageReadRole"
        )
    if source is None:
        raise RoleError(role_arn, "this worker cannot assume roles", "imageReadRole")
    try:
        return await source.read_credentials(role_arn)
    except RoleError as err:
        raise RoleError(role_arn, err.reason, "imageReadRole") from err
