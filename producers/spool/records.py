"""The spool's on-disk records: one per event, each with its own checksum, so a torn tail is found.

A segment file begins with ``MAGIC``; then records, each::

    u32 body length | u32 CRC-32 of the body | body
    body = f64 spooled_at | u64 sequence_number | u8 flags | u16 topic length | topic | u16 key length | key
           [| u16 headers length | headers, when flags has HEADERS] | value
    headers = (u8 name length | name | u16 value length | value)*

``value`` is the event exactly as it goes to Kafka (Avro single-object encoding) and ``key`` its
conversation id. A segment's acknowledgements are a sibling file of u32 record indexes.

Everything read back is hostile until checked: lengths are bounded, the checksum must match, the
topic must be a Kafka topic name and the key UTF-8 (the event itself is decoded before it is sent).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

MAGIC = b"AGSPOOL1"
HEAD = struct.Struct("<II")
FIXED = struct.Struct("<dQB")
SHORT = struct.Struct("<H")
MAX_BODY = 64 << 20
"""No event is this large (the broker's limit is far below it): a longer length is corruption."""
HELD = 0x01
"""Flag: the record was spooled without being handed to the producer, so the spool must send it."""
HEADERS = 0x02
"""Flag: the record carries the message's Kafka headers (trace context, event type); older records have none."""
MAX_HEADERS = 8 << 10
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


class CorruptRecord(ValueError):
    """Bytes that are not a whole, intact record."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    sequence_number: int
    spooled_at: float
    flags: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def held(self) -> bool:
        return bool(self.flags & HELD)

    def encode(self) -> bytes:
        topic = self.topic.encode()
        flags = self.flags | HEADERS if self.headers else self.flags & ~HEADERS
        parts = [FIXED.pack(self.spooled_at, self.sequence_number, flags), SHORT.pack(len(topic)), topic,
                 SHORT.pack(len(self.key)), self.key]
        if self.headers:
            packed = _pack_headers(self.headers)
            parts += [SHORT.pack(len(packed)), packed]
        parts.append(self.value)
        body = b"".join(parts)
        return HEAD.pack(len(body), zlib.crc32(body)) + body


def _pack_headers(headers: tuple[tuple[str, bytes], ...]) -> bytes:
    out = bytearray()
    for name, value in headers:
        raw = name.encode()[:255]
        out += bytes((len(raw),)) + raw + SHORT.pack(len(value)) + value
    if len(out) > MAX_HEADERS:
        raise ValueError(f"a record's headers take {len(out)} bytes; at most {MAX_HEADERS}")
    return bytes(out)


def _unpack_headers(blob: bytes) -> tuple[tuple[str, bytes], ...]:
    found: list[tuple[str, bytes]] = []
    at = 0
    while at < len(blob):
        length = blob[at]
        name = blob[at + 1:at + 1 + length].decode("ascii")
        at += 1 + length
        (size,) = SHORT.unpack_from(blob, at)
        value = blob[at + 2:at + 2 + size]
        if len(name) != length or len(value) != size:
            raise CorruptRecord("a header is cut short")
        found.append((name, bytes(value)))
        at += 2 + size
    return tuple(found)


def parse(body: bytes) -> Record:
    """The record in ``body`` (its checksum already matched); CorruptRecord if its fields are not sound."""
    try:
        spooled_at, sequence, flags = FIXED.unpack_from(body, 0)
        at = FIXED.size
        (topic_length,) = SHORT.unpack_from(body, at)
        topic = body[at + 2:at + 2 + topic_length].decode("ascii")
        at += 2 + topic_length
        (key_length,) = SHORT.unpack_from(body, at)
        key = body[at + 2:at + 2 + key_length]
        at += 2 + key_length
        key.decode("utf-8")
        headers: tuple[tuple[str, bytes], ...] = ()
        if flags & HEADERS:
            (headers_length,) = SHORT.unpack_from(body, at)
            blob = body[at + 2:at + 2 + headers_length]
            if len(blob) != headers_length or headers_length > MAX_HEADERS:
                raise CorruptRecord("the headers are out of bounds")
            headers = _unpack_headers(blob)
            at += 2 + headers_length
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise CorruptRecord(f"fields do not parse ({exc})") from None
    if not _TOPIC.fullmatch(topic) or len(key) != key_length or at > len(body) or not key:
        raise CorruptRecord("a field is out of bounds")
    return Record(topic, bytes(key), bytes(body[at:]), sequence, spooled_at, flags & ~HEADERS, headers)


@dataclass(frozen=True, slots=True)
class Found:
    """A record read from a segment, where it is, and the offset just past it."""

    index: int
    offset: int
    end: int
    record: Record


def read(file: BinaryIO, *, start: int = len(MAGIC), index: int = 0) -> Iterator[Found]:
    """The intact records from byte ``start`` on; stops at the end or raises CorruptRecord at the first bad one
    (its ``args[1]`` is the offset where the good records end)."""
    offset = start
    file.seek(offset)
    while True:
        head = file.read(HEAD.size)
        if not head:
            return
        if len(head) < HEAD.size:
            raise CorruptRecord("a record header is cut short", offset)
        length, checksum = HEAD.unpack(head)
        if length > MAX_BODY:
            raise CorruptRecord(f"a record claims {length} bytes", offset)
        body = file.read(length)
        if len(body) < length:
            raise CorruptRecord("a record is cut short", offset)
        if zlib.crc32(body) != checksum:
            raise CorruptRecord("a record's checksum does not match", offset)
        try:
            record = parse(body)
        except CorruptRecord as exc:
            raise CorruptRecord(str(exc), offset) from None
        end = offset + HEAD.size + length
        yield Found(index, offset, end, record)
        offset = end
        index += 1


def read_acks(data: bytes) -> set[int]:
    """The record indexes a segment's acknowledgement file lists (a torn last entry is ignored)."""
    whole = len(data) - len(data) % 4
    return set(struct.unpack(f"<{whole // 4}I", data[:whole]))


def pack_acks(indexes: list[int]) -> bytes:
    return struct.pack(f"<{len(indexes)}I", *indexes)
