"""Avro's binary encoding for the types the event schema uses, compiled once per schema into closures.

fastavro writes any schema, and pays for it on every field of every event: a lookup of the field's type,
a union resolved by trying each branch. The event schema uses few types (records, ``null`` unions, a
union of payload records chosen by name, strings, longs, ints, doubles, booleans, an array and a map of
strings, the ``uuid`` and ``timestamp-micros`` logical types), so the current schema is compiled into a
writer that does only what its fields need, in about half fastavro's time. It writes the bytes fastavro
writes (a property test holds it to that); ``compile_writer`` says
NotCompilable for any other type, and the codec keeps fastavro for such a schema. Reading stays
fastavro's: it resolves the writer's schema against the reader's.
"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime
from typing import Any, Callable

Writer = Callable[[Any, list[bytes]], None]
"""Appends the encoding of a value to a list of parts."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOUBLE = struct.Struct("<d")
_SMALL = [bytes([n]) for n in range(128)]
"""The varint of each zigzagged value below 128 (one byte)."""
_ZERO = _SMALL[0]
_ONE = _SMALL[2]
"""The union index 1 (the zigzag of 1 is 2)."""
_TRUE, _FALSE = b"\x01", b"\x00"
_LONG = 2**63


class NotCompilable(Exception):
    """A schema with a type the compiled writer does not cover."""


def varint(n: int) -> bytes:
    """The zigzag varint of a long."""
    n = (n << 1) ^ (n >> 63)
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _write_string(value: Any, parts: list[bytes]) -> None:
    raw = value.encode()  # a lone surrogate raises UnicodeEncodeError, a ValueError
    n = len(raw)
    parts.append(_SMALL[n << 1] if n < 64 else varint(n))
    parts.append(raw)


def _write_long(value: Any, parts: list[bytes]) -> None:
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{value!r:.40} is not an integer")
    if not -_LONG <= value < _LONG:
        raise OverflowError(f"{value} does not fit in a long")
    parts.append(varint(value))


def _write_double(value: Any, parts: list[bytes]) -> None:
    parts.append(_DOUBLE.pack(value))


def _write_boolean(value: Any, parts: list[bytes]) -> None:
    parts.append(_TRUE if value else _FALSE)


def _write_null(value: Any, parts: list[bytes]) -> None:
    if value is not None:
        raise TypeError(f"{value!r:.40} is not null")


def _write_timestamp_micros(value: Any, parts: list[bytes]) -> None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("a timestamp without a time zone")
        delta = value - _EPOCH
        value = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    _write_long(value, parts)


def _write_uuid(value: Any, parts: list[bytes]) -> None:
    _write_string(str(value) if isinstance(value, uuid.UUID) else value, parts)


_PRIMITIVES: dict[str, Writer] = {
    "string": _write_string, "long": _write_long, "int": _write_long, "double": _write_double,
    "boolean": _write_boolean, "null": _write_null,
}
_LOGICAL: dict[tuple[str, str], Writer] = {
    ("long", "timestamp-micros"): _write_timestamp_micros,
    ("string", "uuid"): _write_uuid,
}


def compile_writer(schema: Any) -> Writer:
    """A writer for ``schema`` (as fastavro parses it); NotCompilable for a type it does not cover."""
    if isinstance(schema, str):
        if schema not in _PRIMITIVES:
            raise NotCompilable(f"type {schema!r}")
        return _PRIMITIVES[schema]
    if isinstance(schema, list):
        return _union(schema)
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical is not None:
        if (kind, logical) not in _LOGICAL:
            raise NotCompilable(f"logical type {logical!r} of {kind!r}")
        return _LOGICAL[(kind, logical)]
    if kind == "record":
        return _record(schema)
    if kind == "array":
        return _array(compile_writer(schema["items"]))
    if kind == "map":
        return _map(compile_writer(schema["values"]))
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    raise NotCompilable(f"type {kind!r}")


def _record(schema: dict[str, Any]) -> Writer:
    """Each field in order; a missing one is its default (a union's default is its first branch's)."""
    fields = [(field["name"], field.get("default"), compile_writer(field["type"])) for field in schema["fields"]]

    def write_record(value: Any, parts: list[bytes]) -> None:
        get = value.get
        for name, default, write in fields:
            write(get(name, default), parts)

    return write_record


def _is_record(branch: Any) -> bool:
    return isinstance(branch, dict) and branch.get("type") == "record"


def _union(branches: list[Any]) -> Writer:
    if len(branches) == 2 and branches[0] == "null" and not _is_record(branches[1]):
        write_other = compile_writer(branches[1])

        def write_optional(value: Any, parts: list[bytes]) -> None:
            if value is None:
                parts.append(_ZERO)
            else:
                parts.append(_ONE)
                write_other(value, parts)

        return write_optional
    if all(_is_record(branch) for branch in branches):
        by_name = {branch["name"]: (varint(index), compile_writer(branch)) for index, branch in enumerate(branches)}

        def write_named(value: Any, parts: list[bytes]) -> None:
            name, record = value  # (record name, record): fastavro's tuple notation
            index, write = by_name[name]
            parts.append(index)
            write(record, parts)

        return write_named
    raise NotCompilable(f"a union of {branches!r:.80}")


def _array(write_item: Writer) -> Writer:
    def write_array(value: Any, parts: list[bytes]) -> None:
        if value:
            parts.append(varint(len(value)))
            for item in value:
                write_item(item, parts)
        parts.append(_ZERO)

    return write_array


def _map(write_value: Writer) -> Writer:
    def write_map(value: Any, parts: list[bytes]) -> None:
        if value:
            parts.append(varint(len(value)))
            for key, item in value.items():
                _write_string(key, parts)
                write_value(item, parts)
        parts.append(_ZERO)

    return write_map
