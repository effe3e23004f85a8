"""The body reader of the two ClickHouse-protocol handlers: within its limit, whatever the framing."""

from __future__ import annotations

import io
from email.message import Message

import pytest

from agentlog.deploy.http_body import BodyTooLarge, MalformedBody, read_body


def _headers(**fields: str) -> Message:
    message = Message()
    for name, value in fields.items():
        message[name.replace("_", "-")] = value
    return message


def test_a_body_is_read_whole_within_the_limit_by_length_or_in_chunks() -> None:
    assert read_body(io.BytesIO(b"SELECT 1rest"), _headers(Content_Length="8"), 100) == b"SELECT 1"
    chunked = io.BytesIO(b"6\r\nSELECT\r\n2;x=y\r\n 1\r\n0\r\n\r\n")
    assert read_body(chunked, _headers(Transfer_Encoding="chunked"), 100) == b"SELECT 1"
    assert read_body(io.BytesIO(b""), _headers(), 100) == b""


@pytest.mark.parametrize(("data", "headers", "error"), [
    (b"x" * 101, {"Content_Length": "101"}, BodyTooLarge),
    (b"", {"Content_Length": "-1"}, BodyTooLarge),
    (b"", {"Content_Length": "ten"}, MalformedBody),
    (b"40\r\n" + b"x" * 64 + b"\r\n40\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n", {"Transfer_Encoding": "chunked"}, BodyTooLarge),
    (b"zz\r\nxx\r\n0\r\n\r\n", {"Transfer_Encoding": "chunked"}, MalformedBody),
    (b"-5\r\nxx\r\n0\r\n\r\n", {"Transfer_Encoding": "chunked"}, BodyTooLarge),
])
def test_past_the_limit_or_badly_framed_is_refused(data: bytes, headers: dict[str, str], error: type) -> None:
    with pytest.raises(error):
        read_body(io.BytesIO(data), _headers(**headers), 100)
