"""Where requests may point."""

import json
from typing import Any

import pytest

from tiling.image import ImageInfo
from worker.contract.messages import ImageRequest
from worker.contract.parsing import parse_image_request
from worker.errors import InvalidRequestError, PermanentError
from worker.policy import (
    check_endpoint,
    check_image_size,
    check_image_urls,
    forbidden_address,
    image_scheme,
)


def request(
    url: str = "s3://b/i.tif", endpoint: str = "http://127.0.0.1:8080/invocations"
) -> ImageRequest:
    raw: dict[str, Any] = {
        "jobId": "j",
        "imageUrls": [url],
        "outputs": [{"type": "S3", "bucket": "bucket"}],
        "imageProcessor": {"name": endpoint, "type": "HTTP_ENDPOINT"},
    }
    return parse_image_request(json.dumps(raw))


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("s3://b/k.tif", "s3"),
        ("/data/i.ntf", "file"),
        ("C:/data/i.tif", "file"),
        ("HTTPS://h/x", "https"),
    ],
)
def test_image_scheme(url: str, scheme: str) -> None:
    assert image_scheme(url) == scheme


def test_image_urls() -> None:
    check_image_urls(request(), frozenset({"s3"}))
    with pytest.raises(
        InvalidRequestError, match="'/etc/passwd' is not allowed; allowed schemes: s3"
    ):
        check_image_urls(request("/etc/passwd"), frozenset({"s3"}))
    check_image_urls(request("/data/i.tif"), frozenset({"s3", "file"}))


def test_endpoint_hosts() -> None:
    check_endpoint(request(), frozenset({"127.0.0.1"}))
    check_endpoint(request(), frozenset({"127.0.0.1:8080"}))
    with pytest.raises(
        InvalidRequestError, match=r"host 127.0.0.1 is not an allowed model host \(allowed: none"
    ):
        check_endpoint(request(), frozenset())
    with pytest.raises(InvalidRequestError, match="not an http"):
        check_endpoint(request(endpoint="file:///etc/passwd"), frozenset({"127.0.0.1"}))


@pytest.mark.parametrize("allowed", ["127.0.0.1", "localhost", "::1", "localhost:8080"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_loopback_names_stand_for_each_other(allowed: str, host: str) -> None:
    check_endpoint(request(endpoint=f"http://{host}:8080/invocations"), frozenset({allowed}))


def test_loopback_allowed_does_not_allow_other_hosts() -> None:
    with pytest.raises(
        InvalidRequestError, match=r"host example\.com is not an allowed model host"
    ):
        check_endpoint(request(endpoint="http://example.com/invocations"), frozenset({"localhost"}))


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_metadata_addresses_are_refused_even_when_listed(endpoint: str) -> None:
    host = endpoint.split("//")[1].split("/", maxsplit=1)[0].strip("[]")
    with pytest.raises(InvalidRequestError, match="link-local/metadata address"):
        check_endpoint(request(endpoint=endpoint), frozenset({host}))


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("169.254.169.254", True),
        ("169.254.0.1", True),
        ("fd00:ec2::254", True),
        ("fe80::1", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("::1", False),
    ],
)
def test_forbidden_address(address: str, forbidden: bool) -> None:
    assert forbidden_address(address) is forbidden


def image(width: int, height: int, bands: int = 1, dtype: str = "uint8") -> ImageInfo:
    return ImageInfo("s3://b/i.tif", width, height, bands, dtype, "GTiff", None, None)


def test_image_size_limits() -> None:
    check_image_size(image(70_000, 70_000), 1024, 5_000_000_000, 256 << 20)
    with pytest.raises(PermanentError, match=r"declares 100000 x 100000 px \(10.0 gigapixels\)"):
        check_image_size(image(100_000, 100_000), 1024, 5_000_000_000, 256 << 20)
    # 4096 px tiles of 8 float64 bands: 1 GiB each.
    with pytest.raises(PermanentError, match="8 float64 bands needs 1073741824 bytes"):
        check_image_size(image(10_000, 10_000, 8, "float64"), 4096, 5_000_000_000, 256 << 20)
    # A small image's tiles are no larger than the image.
    check_image_size(image(1000, 1000, 8, "float64"), 4096, 5_000_000_000, 256 << 20)
