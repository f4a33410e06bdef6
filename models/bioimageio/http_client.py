"""The model-runner service's HTTP API, one method call at a time.

A method is called with GET and query parameters or POST and a JSON body, with a bearer token
when one is given. Connection failures, timeouts, 429 and 5xx replies are retried with
full-jitter backoff; other 4xx replies are not. Errors name the method and the service's own
message; replies larger than ``MAX_RESULT_BYTES`` are refused.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError

from models.bioimageio.errors import BackendError, UnknownModelError, UploadExpiredError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RESULT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP reply: status and body."""

    status: int
    data: bytes


class HttpClient:
    """Calls the methods of the model-runner service at one URL, with retries."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        timeout_s: float,
        retries: int,
        backoff_s: float,
    ) -> None:
        """Call the service at ``base_url``, with ``token`` as a bearer token when given."""
        self.base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = urllib3.Timeout(connect=min(timeout_s, 10.0), read=timeout_s)
        self._retries = retries
        self._backoff_s = backoff_s
        self._http = urllib3.PoolManager(maxsize=8, retries=False)

    def call(
        self,
        http_method: str,
        name: str,
        params: Mapping[str, Any],
        model_id: str | None = None,
    ) -> Any:
        """Call one API method (GET with query parameters, POST with a JSON body).

        Raises:
            UnknownModelError: On 404 for a call about ``model_id``.
            UploadExpiredError: On 410.
            BackendError: On any other failure, after the retries.
        """
        url = f"{self.base_url}/{name}"
        if http_method == "GET":
            query = {k: _query_value(v) for k, v in params.items() if v is not None}
            response = self.request("GET", url, name, fields=query)
        else:
            body = json.dumps(dict(params)).encode()
            headers = {"Content-Type": "application/json"}
            response = self.request("POST", url, name, body=body, headers=headers)
        detail = error_detail(response.data)
        if response.status == 404 and model_id is not None:  # noqa: PLR2004
            raise UnknownModelError(f"{self.base_url}: {detail}")
        if response.status == 410:  # noqa: PLR2004
            raise UploadExpiredError(f"{name}: {detail}")
        if response.status in {401, 403}:
            raise BackendError(f"{name}: the model runner refused the credentials: {detail}")
        if response.status != 200:  # noqa: PLR2004
            raise BackendError(f"{name} failed: HTTP {response.status}: {detail}")
        try:
            return json.loads(response.data)
        except ValueError as err:
            raise BackendError(f"{name} answered something that is not JSON: {err}") from err

    def request(self, method: str, url: str, what: str, auth: bool = True, **kwargs: Any) -> Reply:
        """One request with retries; the last reply (any status).

        ``auth`` adds the bearer token: never to presigned URLs, which carry their own
        signature and may point at another host.

        Raises:
            BackendError: When the service cannot be reached after the retries.
        """
        headers = {**(self._headers if auth else {}), **kwargs.pop("headers", {})}
        for attempt in range(self._retries + 1):
            try:
                response = self._http.request(
                    method,
                    url,
                    headers=headers,
                    timeout=self._timeout,
                    redirect=False,
                    preload_content=False,
                    **kwargs,
                )
                try:
                    data = response.read(MAX_RESULT_BYTES + 1)
                finally:
                    response.release_conn()
                if len(data) > MAX_RESULT_BYTES:
                    raise BackendError(f"{what}: the reply is larger than {MAX_RESULT_BYTES} bytes")
                if response.status not in RETRY_STATUSES or attempt == self._retries:
                    return Reply(response.status, data)
                failure = f"HTTP {response.status}: {error_detail(data)}"
            except HTTPError as err:
                if attempt == self._retries:
                    raise BackendError(
                        f"{what}: cannot reach {url.split('?', maxsplit=1)[0]}: {err}"
                    ) from err
                failure = str(err)
            delay = random.uniform(0, self._backoff_s * 2**attempt)
            log.info("%s: %s; retrying in %.2f s", what, failure, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def error_detail(data: bytes) -> str:
    """The message of an error reply (``detail`` or ``message``), or its first bytes."""
    try:
        body = json.loads(data)
    except ValueError:
        return data[:300].decode("utf-8", "replace")
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("message") or body)[:1000]
    return str(body)[:1000]
