"""Avro's binary encoding for the types the event schema uses, compiled once per schema.

fastavro reads and writes any schema, and pays for it on every field of every event: a lookup of the
field's type, a union resolved by trying each branch. The event schema uses few types (records, ``null``
unions, a union of payload records chosen by name, strings, longs, ints, doubles, booleans, an array and a
map of strings, the ``uuid`` and ``timestamp-micros`` logical types), so the current schema is compiled
into a writer (closures, one per field) that writes in about half fastavro's time, and a reader (the
source of one function, generated from the schema) that reads in about two thirds of it. They write the
bytes fastavro writes and read what it reads (property tests hold them to that); for any other type they
say NotCompilable, and the codec keeps fastavro. Events of an older schema are read by fastavro, which
resolves their writer's schema against the current one.

The reader trusts nothing: every length is checked against the bytes that remain, a varint has at most
ten bytes, a union index must name a branch, a block's count cannot pass the bytes left; what does not
read raises CorruptBody (a ValueError).
"""

from __future__ import annotations

import re
import struct
import uuid
from datetime import UTC, datetime, timedelta
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
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


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


def _write_bytes(value: Any, parts: list[bytes]) -> None:
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{type(value).__name__} is not bytes")
    n = len(value)
    parts.append(_SMALL[n << 1] if n < 64 else varint(n))
    parts.append(bytes(value))


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
    "string": _write_string, "bytes": _write_bytes, "long": _write_long, "int": _write_long, "double": _write_double,
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


# -- reading ---------------------------------------------------------------------------------------------

Reader = Callable[[bytes, int], tuple[Any, int]]
"""Reads a value at a position; returns it and the position after it."""


class CorruptBody(ValueError):
    """Bytes that are not an encoding of the schema."""


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint of at most ten bytes."""
    n = shift = 0
    for end in range(pos, pos + 10):
        b = data[end]  # past the end: IndexError, which the reader says is a corrupt body
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), end + 1
        shift += 7
    raise CorruptBody("a number longer than ten bytes")


def _uuid_text(text: str) -> str:
    """A UUID's canonical text, as fastavro's reader gives it (it reads a ``uuid.UUID``)."""
    if _CANONICAL.fullmatch(text) is None:
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise CorruptBody(f"{text[:60]!r} is not a UUID") from None
    return text


def _timestamp(micros: int) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise CorruptBody(f"a timestamp out of range ({micros} µs)") from None


def _block_count(data: bytes, pos: int, size: int) -> tuple[int, int]:
    """A block's item count (a negative count is followed by the block's size in bytes, skipped)."""
    count, pos = read_long(data, pos)
    if count < 0:
        count = -count
        _, pos = read_long(data, pos)
    if count > size - pos:  # every item takes a byte at least
        raise CorruptBody(f"a block of {count} items where {size - pos} bytes remain")
    return count, pos


class _Source:
    """Python source of one reader function, a line at a time, with names for what it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {"read_long": read_long, "CorruptBody": CorruptBody, "unpack": _DOUBLE.unpack_from,
                                      "uuid_text": _uuid_text, "timestamp": _timestamp, "block_count": _block_count}
        self.counter = 0

    def var(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def long(self, depth: int, target: str) -> None:
        self.emit(depth, "b = data[pos]")
        self.emit(depth, "if b < 0x80:")
        self.emit(depth + 1, f"{target} = (b >> 1) ^ -(b & 1)")
        self.emit(depth + 1, "pos += 1")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"{target}, pos = read_long(data, pos)")

    def string(self, depth: int, target: str, *, text: bool = True) -> None:
        self.long(depth, "n")
        self.emit(depth, "end = pos + n")
        self.emit(depth, "if n < 0 or end > size:")
        self.emit(depth + 1, "raise CorruptBody(f'a string of {n} bytes where {size - pos} remain')")
        self.emit(depth, f"{target} = data[pos:end]{'.decode()' if text else ''}")
        self.emit(depth, "pos = end")

    def value(self, depth: int, schema: Any, target: str) -> None:  # noqa: C901 -- one branch per type
        if isinstance(schema, list):
            self.union(depth, schema, target)
            return
        kind = schema if isinstance(schema, str) else schema.get("type")
        logical = None if isinstance(schema, str) else schema.get("logicalType")
        if logical == "uuid" and kind == "string":
            self.string(depth, target)
            self.emit(depth, f"{target} = uuid_text({target})")
        elif logical == "timestamp-micros" and kind == "long":
            self.long(depth, target)
            self.emit(depth, f"{target} = timestamp({target})")
        elif logical is not None:
            raise NotCompilable(f"logical type {logical!r} of {kind!r}")
        elif kind == "string":
            self.string(depth, target)
        elif kind == "bytes":
            self.string(depth, target, text=False)
        elif kind in ("long", "int"):
            self.long(depth, target)
        elif kind == "double":
            self.emit(depth, f"{target} = unpack(data, pos)[0]")
            self.emit(depth, "pos += 8")
        elif kind == "boolean":
            self.emit(depth, f"{target} = data[pos] != 0")
            self.emit(depth, "pos += 1")
        elif kind == "null":
            self.emit(depth, f"{target} = None")
        elif kind == "record":
            self.record(depth, schema, target)
        elif kind in ("array", "map"):
            self.blocks(depth, schema, target)
        else:
            raise NotCompilable(f"type {kind!r}")

    def record(self, depth: int, schema: dict[str, Any], target: str) -> None:
        values = []
        for field in schema["fields"]:
            var = self.var()
            self.value(depth, field["type"], var)
            values.append(f"{field['name']!r}: {var}")
        self.emit(depth, f"{target} = {{{', '.join(values)}}}")

    def union(self, depth: int, branches: list[Any], target: str) -> None:
        index = self.var()
        self.long(depth, index)
        for position, branch in enumerate(branches):
            self.emit(depth, f"{'if' if position == 0 else 'elif'} {index} == {position}:")
            if _is_record(branch):
                inner = self.var()
                self.value(depth + 1, branch, inner)
                self.emit(depth + 1, f"{target} = ({branch['name']!r}, {inner})")
            else:
                self.value(depth + 1, branch, target)
        self.emit(depth, "else:")
        self.emit(depth + 1, f"raise CorruptBody(f'union index {{{index}}} of {len(branches)} branches')")

    def blocks(self, depth: int, schema: dict[str, Any], target: str) -> None:
        items = schema["items"] if schema["type"] == "array" else schema["values"]
        if items == "null":
            raise NotCompilable("a block of nulls")  # they take no bytes: the bound on a count needs a byte each
        is_map = schema["type"] == "map"
        count, item, key = self.var(), self.var(), self.var()
        self.emit(depth, f"{target} = {{}}" if is_map else f"{target} = []")
        self.emit(depth, "while True:")
        self.emit(depth + 1, f"{count}, pos = block_count(data, pos, size)")
        self.emit(depth + 1, f"if not {count}:")
        self.emit(depth + 2, "break")
        self.emit(depth + 1, f"for _ in range({count}):")
        if is_map:
            self.string(depth + 2, key)
        self.value(depth + 2, items, item)
        self.emit(depth + 2, f"{target}[{key}] = {item}" if is_map else f"{target}.append({item})")


def compile_reader(schema: Any) -> Reader:
    """A reader of ``schema`` (as fastavro parses it) that returns what fastavro's returns (a union of
    records as ``(name, record)``, a ``uuid`` as its canonical text); NotCompilable for a type it does not
    cover. Bytes that are not an encoding of the schema raise CorruptBody."""
    source = _Source()
    source.emit(1, "size = len(data)")
    source.emit(1, "try:")
    source.value(2, schema, "result")
    source.emit(1, "except IndexError:")
    source.emit(2, "raise CorruptBody('the body ends early') from None")
    source.emit(1, "except struct_error:")
    source.emit(2, "raise CorruptBody('the body ends inside a double') from None")
    source.emit(1, "except UnicodeDecodeError as exc:")
    source.emit(2, "raise CorruptBody(f'a string that is not UTF-8 ({exc.reason})') from None")
    source.emit(1, "return result, pos")
    source.names["struct_error"] = struct.error
    code = "def read(data, pos):\n" + "\n".join(source.lines) + "\n"
    namespace = dict(source.names)
    exec(compile(code, "<agentlog.schemas.binary reader>", "exec"), namespace)  # noqa: S102 -- our own source
    reader: Reader = namespace["read"]
    return reader
