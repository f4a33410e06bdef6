"""HTTP/S URL inputs of the model runner, fetched behind a guard.

A URL is fetched only when its scheme is ``http`` or ``https``, its host is on the
allowlist, and every address the host resolves to is public (loopback and private addresses
only where the policy allows them, for a local stack; link-local and cloud metadata
addresses never). The connection goes to the address that was checked (no second DNS
lookup), redirects are followed only within the same host, and the body is capped in size
and time. Every refusal is an :class:`~models.bioimageio.errors.ApiError` with a 4xx status
naming the reason; nothing is sent to a refused host.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from models.bioimageio.errors import ApiError

MAX_URL_BYTES = 256 * 1024 * 1024
# Cloud instance metadata services: never fetched, whatever the policy.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (``getaddrinfo``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which URLs ``infer`` may fetch, and how much of them.

    ``allowed_hosts`` are host names (or literal addresses) compared case-insensitively;
    ``allow_private`` lets them resolve to loopback and private addresses (local stacks only).
    """

    allowed_hosts: frozenset[str] = frozenset()
    allow_private: bool = False
    max_bytes: int = MAX_URL_BYTES
    timeout_s: float = 30.0
    max_redirects: int = 3
    resolver: Resolver = field(default=resolve_host, compare=False)

    @classmethod
    def from_hosts(cls, hosts: str, **options: Any) -> UrlPolicy:
        """A policy from a comma-separated host list."""
        names = frozenset(h.strip().lower() for h in hosts.split(",") if h.strip())
        return cls(allowed_hosts=names, **options)


def fetch_url(url: str, policy: UrlPolicy) -> bytes:
    """The body of ``url``, fetched under ``policy``.

    Raises:
        ApiError: 400 for a URL that is not http/https or that answers an error, 403 for a
            host or address the policy refuses (or a redirect to another host), 408 on
            timeout, 413 for a body over the size cap, 502 when the host cannot be reached.
    """
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        address = _checked_address(url, policy)
        response = _get(parts, address, policy)
        try:
            if response.status in {301, 302, 303, 307, 308}:
                target = urljoin(url, response.headers.get("Location", ""))
                target_host = (urlsplit(target).hostname or "").lower()
                if target_host != host:
                    raise ApiError(
                        403,
                        f"inputs: {url} redirects to another host ({target_host or '?'});"
                        " redirects are followed only within the same host",
                    )
                url = target
                continue
            if response.status != 200:  # noqa: PLR2004
                raise ApiError(400, f"inputs: {url} answered HTTP {response.status}")
            return _read_capped(response, url, policy)
        finally:
            response.release_conn()
    raise ApiError(400, f"inputs: {url} redirects more than {policy.max_redirects} times")


def _checked_address(url: str, policy: UrlPolicy) -> str:
    """The address to connect to for ``url``, once scheme, host and addresses pass."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise ApiError(
            400, f"inputs: only http and https URLs are fetched, not {parts.scheme or 'none'!r}"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise ApiError(400, f"inputs: {url} names no host")
    if host not in policy.allowed_hosts:
        allowed = ", ".join(sorted(policy.allowed_hosts)) or "none"
        raise ApiError(
            403, f"inputs: host {host!r} is not on this server's URL allowlist ({allowed})"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = policy.resolver(host, port)
    except OSError as err:
        raise ApiError(400, f"inputs: host {host!r} cannot be resolved: {err}") from None
    if not addresses:
        raise ApiError(400, f"inputs: host {host!r} has no address")
    for text in addresses:
        reason = _refusal(ipaddress.ip_address(text.split("%")[0]), policy)
        if reason:
            raise ApiError(403, f"inputs: host {host!r} resolves to {reason} address {text}")
    return addresses[0]


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: UrlPolicy) -> str:
    """Why ``address`` may not be fetched from ('' when it may)."""
    always = [
        (address in METADATA_ADDRESSES, "a cloud metadata"),
        (address.is_link_local, "a link-local"),
        (address.is_unspecified or address.is_multicast or address.is_reserved, "a non-routable"),
    ]
    unless_allowed = [(address.is_loopback, "a loopback"), (not address.is_global, "a private")]
    checks = always if policy.allow_private else always + unless_allowed
    return next((reason for refused, reason in checks if refused), "")


def _get(parts: Any, address: str, policy: UrlPolicy) -> urllib3.BaseHTTPResponse:
    """GET the URL from ``address`` (not a fresh lookup of its host)."""
    host = parts.hostname
    timeout = urllib3.Timeout(connect=policy.timeout_s, read=policy.timeout_s)
    pool: urllib3.HTTPConnectionPool
    if parts.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address, parts.port or 443, server_hostname=host, assert_hostname=host
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, parts.port or 80)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    netloc_host = f"{host}:{parts.port}" if parts.port else str(host)
    url = f"{parts.scheme}://{parts.hostname}{path}"
    try:
        return pool.urlopen(
            "GET",
            path,
            headers={"Host": netloc_host},
            timeout=timeout,
            redirect=False,
            retries=False,
            preload_content=False,
        )
    except Urllib3TimeoutError as err:
        raise ApiError(
            408, f"inputs: {url} did not answer within {policy.timeout_s:.0f} s"
        ) from err
    except HTTPError as err:
        raise ApiError(502, f"inputs: cannot fetch {url}: {err}") from err


def _read_capped(response: urllib3.BaseHTTPResponse, url: str, policy: UrlPolicy) -> bytes:
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > policy.max_bytes:
        raise ApiError(413, f"inputs: {url} is {length} bytes, over the {policy.max_bytes} cap")
    try:
        data = response.read(policy.max_bytes + 1)
    except Urllib3TimeoutError as err:
        raise ApiError(408, f"inputs: {url} was not read within {policy.timeout_s:.0f} s") from err
    except HTTPError as err:
        raise ApiError(502, f"inputs: cannot read {url}: {err}") from err
    if len(data) > policy.max_bytes:
        raise ApiError(413, f"inputs: {url} is over the {policy.max_bytes} byte cap")
    return bytes(data)
