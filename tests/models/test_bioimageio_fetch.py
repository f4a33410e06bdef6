"""The URL guard of the model runner and the HTTP body framing of its own server."""

import io
from email.message import Message

import pytest

from models.bioimageio.errors import ApiError
from models.bioimageio.fetch import UrlPolicy, fetch_url
from models.bioimageio.framing import read_body


def policy(address: str, allow_private: bool = False) -> UrlPolicy:
    """Hosts example.org and 127.0.0.1 allowed; every host resolves to ``address``."""
    return UrlPolicy(
        allowed_hosts=frozenset({"example.org", "127.0.0.1"}),
        allow_private=allow_private,
        resolver=lambda host, port: [address],
    )


@pytest.mark.parametrize(
    ("url", "address", "allow_private", "status", "reason"),
    [
        ("ftp://example.org/a.npy", "93.184.216.34", False, 400, "only http and https"),
        ("http://evil.org/a.npy", "93.184.216.34", False, 403, "not on this server's URL"),
        ("http://example.org/a.npy", "127.0.0.1", False, 403, "a loopback address"),
        ("http://example.org/a.npy", "10.0.0.7", False, 403, "a private address"),
        ("http://example.org/a.npy", "169.254.169.254", True, 403, "a cloud metadata"),
        ("http://example.org/a.npy", "169.254.1.1", True, 403, "a link-local address"),
        ("http://example.org/a.npy", "fd00:ec2::254", True, 403, "a cloud metadata"),
        ("http://127.0.0.1:1/a.npy", "0.0.0.0", True, 403, "a non-routable address"),
    ],
)
def test_refusals_name_the_reason(
    url: str, address: str, allow_private: bool, status: int, reason: str
) -> None:
    with pytest.raises(ApiError) as caught:
        fetch_url(url, policy(address, allow_private))
    assert caught.value.status == status
    assert reason in caught.value.message


CHUNKED = b'3\r\n{"a\r\n4\r\n": 1\r\n1\r\n}\r\n0\r\n\r\n'


def headers(**values: str) -> Message:
    message = Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


@pytest.mark.parametrize(
    ("head", "body", "status", "result"),
    [
        ({"Content_Length": "abc"}, b"", 400, "is not a number"),
        ({"Content_Length": "10"}, b"short", 400, "ended after 5 of 10"),
        ({"Content_Length": "99999"}, b"", 413, "larger than"),
        ({"Transfer_Encoding": "chunked", "Content_Length": "3"}, b"", 400, "both"),
        ({"Transfer_Encoding": "gzip"}, b"", 400, "only chunked"),
        ({"Transfer_Encoding": "chunked"}, b"zz\r\n", 400, "bad chunk size"),
        ({"Transfer_Encoding": "chunked"}, b"4\r\nab", 400, "cut short"),
        (
            {"Transfer_Encoding": "chunked"},
            b'3\r\n{"a\r\n4\r\n": 1\r\n1\r\n}\r\n0\r\n\r\n',
            200,
            '{"a": 1}',
        ),
        ({"Content_Length": "2"}, b"{}", 200, "{}"),
    ],
)
def test_request_framing(head: dict[str, str], body: bytes, status: int, result: str) -> None:
    if status == 200:
        assert read_body(io.BytesIO(body), headers(**head), 1000).decode() == result
        return
    with pytest.raises(ApiError) as caught:
        read_body(io.BytesIO(body), headers(**head), 1000)
    assert caught.value.status == status
    assert result in caught.value.message
