"""Model endpoints: HTTP (SageMaker container contract) and SageMaker runtime.

Status codes are checked: 408, 429 and 5xx are retried with exponential backoff and full
jitter; other 4xx fail the tile at once with the body's message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import EndpointPermanentError, EndpointRetryableError
from worker.limiter import Limiter
from worker.metrics import tile_stats

if TYPE_CHECKING:
    from types_aiobotocore_sagemaker_runtime.client import SageMakerRuntimeClient

log = logging.getLogger(__name__)

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
THROTTLING_STATUS = frozenset({429, 503})
MAX_ERROR_CHARS = 300
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 10.0
RETRY_AFTER_CAP_S = 60.0
MAX_REPLY_BYTES = 64 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024


async def with_retries(
    call: Callable[[], Awaitable[bytes]], retries: int, what: str, limiter: Limiter
) -> bytes:
    """Run ``call()`` under the endpoint's limit; retry EndpointRetryableError with
    full-jitter backoff, or after the endpoint's Retry-After."""
    attempt = 0
    while True:
        try:
            async with limiter.slot() as slot:
                try:
                    return await call()
                except EndpointRetryableError as err:
                    if err.throttled:
                        slot.throttled()
                        if (stats := tile_stats()) is not None:
                            stats.throttles += 1
                    elif err.unreachable:
                        slot.overloaded()
                    raise
        except EndpointRetryableError as err:
            if attempt >= retries:
                raise
            if (stats := tile_stats()) is not None:
                stats.retries += 1
            delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
            if err.retry_after_s is not None:
                delay = min(err.retry_after_s, RETRY_AFTER_CAP_S)
            log.debug("%s: %s; retry %d in %.2fs", what, err, attempt + 1, delay)
            attempt += 1
            await asyncio.sleep(delay)


async def read_capped(chunks: AsyncIterator[bytes], what: str, limit: int) -> bytes:
    """A reply body, refused once it grows past ``limit`` bytes.

    Raises:
        EndpointPermanentError: For a larger reply (the tile fails).
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise EndpointPermanentError(f"{what}: reply over the {limit} byte limit")
        parts.append(chunk)
    return b"".join(parts)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class HttpEndpoint:
    """POST tiles to a URL; ``CustomAttributes`` goes in the SageMaker header."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        custom_attributes: str | None,
        timeout_s: float,
        retries: int,
        limiter: Limiter,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        """Call ``url`` through the pooled ``session``, under ``limiter``."""
        self._session = session
        self.url = url
        self._headers = {CUSTOM_ATTRIBUTES_HEADER: custom_attributes} if custom_attributes else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retries = retries
        self._limiter = limiter
        self._max_reply_bytes = max_reply_bytes

    async def invoke(self, payload: bytes, content_type: str) -> bytes:
        """POST one tile, retrying throttling, 5xx, timeouts and connection errors."""
        return await with_retries(
            lambda: self._post(payload, content_type), self._retries, self.url, self._limiter
        )

    async def _post(self, payload: bytes, content_type: str) -> bytes:
        headers = {**self._headers, "Content-Type": content_type}
        try:
            async with self._session.post(
                self.url,
                data=payload,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,  # a redirect could point anywhere: it fails the tile
            ) as response:
                body = await read_capped(
                    response.content.iter_chunked(READ_CHUNK_BYTES), self.url, self._max_reply_bytes
                )
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as err:
            raise EndpointRetryableError(
                f"{self.url}: {type(err).__name__}: {err}", unreachable=True
            ) from err
        if status == 200:  # noqa: PLR2004
            return body
        message = body[:MAX_ERROR_CHARS].decode(errors="replace")
        if status in RETRYABLE_STATUS:
            raise EndpointRetryableError(
                f"{self.url}: HTTP {status}: {message}",
                retry_after,
                throttled=status in THROTTLING_STATUS,
            )
        raise EndpointPermanentError(f"{self.url}: HTTP {status}: {message}")


class SageMakerEndpoint:
    """``InvokeEndpoint`` on a SageMaker endpoint with the request's parameters."""

    def __init__(
        self,
        client: SageMakerRuntimeClient,
        name: str,
        parameters: dict[str, Any],
        retries: int,
        limiter: Limiter,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        """Invoke ``name`` through ``client`` with ``parameters`` (ContentType, ...)."""
        self._client = client
        self.name = name
        self._parameters = parameters
        self._retries = retries
        self._limiter = limiter
        self._max_reply_bytes = max_reply_bytes

    async def invoke(self, payload: bytes, content_type: str) -> bytes:
        """Invoke the endpoint with one tile."""
        return await with_retries(
            lambda: self._call(payload, content_type), self._retries, self.name, self._limiter
        )

    async def _call(self, payload: bytes, content_type: str) -> bytes:
        parameters = {"ContentType": content_type, **self._parameters}
        try:
            reply = await self._client.invoke_endpoint(
                EndpointName=self.name, Body=payload, **parameters
            )
            async with reply["Body"] as stream:
                return await read_capped(
                    stream.iter_chunks(READ_CHUNK_BYTES), self.name, self._max_reply_bytes
                )
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            text = f"{self.name}: {code}: {err}"
            throttled = status in THROTTLING_STATUS or "Throttl" in code
            if status in RETRYABLE_STATUS or throttled:
                raise EndpointRetryableError(text, throttled=throttled) from err
            raise EndpointPermanentError(text) from err
        except BotoCoreError as err:
            raise EndpointRetryableError(f"{self.name}: {err}", unreachable=True) from err
