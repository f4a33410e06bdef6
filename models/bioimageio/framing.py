"""Request bodies of the hand-written HTTP server: ``Content-Length`` or chunked framing.

A body is read whole, up to a cap. A ``Content-Length`` that is not a decimal number, a
chunked body with a bad chunk size, and both framings at once are refused with a 400 (so
the connection is never left mid-body); a body over the cap with a 413.
"""

from __future__ import annotations

from email.message import Message
from io import BufferedIOBase

from models.bioimageio.errors import ApiError

_MAX_CHUNK_LINE = 1024


def read_body(stream: BufferedIOBase, headers: Message, limit: int, required: str = "") -> bytes:
    """The request body framed by ``headers``, read from ``stream``.

    Raises:
        ApiError: 400 for malformed framing (or an empty body when ``required`` names what
            it must hold), 413 for a body over ``limit`` bytes.
    """
    body = _read(stream, headers, limit)
    if required and not body:
        raise ApiError(400, f"{required} is required")
    return body


def _read(stream: BufferedIOBase, headers: Message, limit: int) -> bytes:
    encoding = (headers.get("Transfer-Encoding") or "").strip().lower()
    length_text = headers.get("Content-Length")
    if encoding:
        if length_text is not None:
            raise ApiError(400, "a request may not have both Transfer-Encoding and Content-Length")
        if encoding != "chunked":
            raise ApiError(400, f"Transfer-Encoding {encoding!r} is not supported (only chunked)")
        return _read_chunked(stream, limit)
    if length_text is None:
        return b""
    if not length_text.strip().isdigit():
        raise ApiError(400, f"Content-Length {length_text!r} is not a number of bytes")
    length = int(length_text)
    if length > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes")
    body = stream.read(length)
    if len(body) != length:
        raise ApiError(400, f"the body ended after {len(body)} of {length} bytes")
    return body


def _read_chunked(stream: BufferedIOBase, limit: int) -> bytes:
    parts = []
    total = 0
    while True:
        line = stream.readline(_MAX_CHUNK_LINE)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ApiError(400, f"bad chunk size {size_text[:20]!r} in a chunked body") from None
        if size == 0:
            break
        total += size
        if total > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes")
        chunk = stream.read(size)
        if len(chunk) != size or stream.read(2) != b"\r\n":
            raise ApiError(400, "a chunk of the chunked body is cut short")
        parts.append(chunk)
    while stream.readline(_MAX_CHUNK_LINE) not in {b"\r\n", b"\n", b""}:
        pass  # trailers
    return b"".join(parts)
