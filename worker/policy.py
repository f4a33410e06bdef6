"""Where a request may point: image URL schemes and HTTP endpoint hosts (settings), and never
link-local or cloud metadata addresses, whatever the settings say."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import numpy as np

from tiling.image import ImageInfo
from worker.contract.messages import ImageRequest, ProcessorType
from worker.errors import InvalidRequestError, PermanentError

_LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
_METADATA_V6 = ipaddress.ip_address("fd00:ec2::254")
# The names of this machine's loopback interface: allowing one allows them all.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def image_scheme(url: str) -> str:
    """``s3``, ``http``, ``https``, ... or ``file`` for a local path."""
    scheme = urlsplit(url).scheme.lower()
    return scheme if len(scheme) > 1 else "file"  # "C:" is a drive, not a scheme


def check_image_urls(request: ImageRequest, schemes: frozenset[str]) -> None:
    """Refuse image URLs whose scheme is not allowed.

    Raises:
        InvalidRequestError: Naming the URL and the allowed schemes.
    """
    for url in request.image_urls:
        if image_scheme(url) not in schemes:
            allowed = ", ".join(sorted(schemes))
            raise InvalidRequestError(
                f"imageUrls: {url!r} is not allowed; allowed schemes: {allowed}"
                " (MODELRUNNER_IMAGE_URL_SCHEMES)"
            )


def forbidden_address(address: str) -> bool:
    """Link-local IPv4 (instance metadata lives there) or the IPv6 metadata address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip == _METADATA_V6 or ip in _LINK_LOCAL_V4 or (ip.version == 6 and ip.is_link_local)  # noqa: PLR2004


def check_endpoint(request: ImageRequest, hosts: frozenset[str]) -> None:
    """Refuse an HTTP endpoint outside the allowed hosts, or resolving to a forbidden address.

    Raises:
        InvalidRequestError: Naming the endpoint and the reason.
    """
    if request.image_processor.type is not ProcessorType.HTTP_ENDPOINT:
        return
    url = request.image_processor.name
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidRequestError(f"imageProcessor.name: {url!r} is not an http(s) URL")
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not host_allowed(host, port, hosts):
        allowed = ", ".join(sorted(hosts)) or "none"
        raise InvalidRequestError(
            f"imageProcessor.name: host {host} is not an allowed model host (allowed: {allowed};"
            " MODELRUNNER_ENDPOINT_HOSTS)"
        )
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port)}
    except OSError as err:
        raise InvalidRequestError(f"imageProcessor.name: cannot resolve {host}: {err}") from err
    bad = sorted(a for a in addresses if forbidden_address(str(a)))
    if bad:
        raise InvalidRequestError(
            f"imageProcessor.name: {host} resolves to a link-local/metadata address ({bad[0]})"
        )


def host_allowed(host: str, port: int, hosts: frozenset[str]) -> bool:
    """``host`` (or ``host:port``) is in ``hosts``; loopback names stand for each other."""
    names = LOOPBACK_NAMES if host in LOOPBACK_NAMES else frozenset({host})
    return any(name in hosts or f"{name}:{port}" in hosts for name in names)


def check_image_size(info: ImageInfo, tile_size: int, max_pixels: int, max_tile_bytes: int) -> None:
    """Refuse an image whose declared size, or whose tiles, would need too much memory.

    The header alone decides: a file that declares 100000 x 100000 pixels is refused before
    any pixel is read, whatever it really holds.

    Raises:
        PermanentError: Naming the size, the limit and its setting.
    """
    pixels = info.width * info.height
    if pixels > max_pixels:
        raise PermanentError(
            f"image {info.url} declares {info.width} x {info.height} px"
            f" ({pixels / 1e9:.1f} gigapixels), more than MODELRUNNER_MAX_IMAGE_PIXELS"
            f" ({max_pixels})"
        )
    side = min(tile_size, max(info.width, info.height))
    tile_bytes = side * side * info.band_count * np.dtype(info.dtype).itemsize
    if tile_bytes > max_tile_bytes:
        raise PermanentError(
            f"image {info.url}: a {side} px tile of {info.band_count} {info.dtype} bands needs"
            f" {tile_bytes} bytes, more than MODELRUNNER_MAX_TILE_BYTES ({max_tile_bytes})"
        )
