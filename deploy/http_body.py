"""A request's body read within a limit (``Content-Length`` or chunked), for the stdlib HTTP handlers that
speak ClickHouse's protocol: the analytics engine and ``serve``'s front for analysts' tools."""

from __future__ import annotations

from email.message import Message
from typing import Protocol


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...


class BodyTooLarge(ValueError):
    """The body is past the limit (what was read of it is dropped; the connection should close)."""


class MalformedBody(ValueError):
    """A ``Content-Length`` or a chunk size that is not a number."""


def read_body(rfile: Readable, headers: Message, limit: int) -> bytes:
    """At most ``limit`` bytes of body; BodyTooLarge past it, MalformedBody when its framing is not HTTP's."""
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(rfile.readline(100).split(b";")[0].strip() or b"0", 16)
            except ValueError:
                raise MalformedBody("a malformed chunk size") from None
            if size == 0:
                rfile.readline(100)
                return b"".join(chunks)
            total += size
            if size < 0 or total > limit:
                raise BodyTooLarge(f"a body over {limit:,} bytes")
            chunks.append(rfile.read(size))
            rfile.readline(100)
    try:
        length = int(headers.get("Content-Length") or 0)
    except ValueError:
        raise MalformedBody("a malformed Content-Length") from None
    if not 0 <= length <= limit:
        raise BodyTooLarge(f"a body over {limit:,} bytes")
    return rfile.read(length) if length else b""
