"""The compiled writer writes, for every event, the bytes fastavro writes, and the compiled reader reads
what fastavro reads; what they cannot cover is said."""

from __future__ import annotations

import io

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from agentlog.schemas import Codec, Event, EventType, SchemaError
from agentlog.schemas.binary import CorruptBody, NotCompilable, compile_reader, compile_writer, varint
from agentlog.schemas.catalog import catalog
from tests.strategies import events

codec = Codec()
schema = catalog().current.schema


def _fastavro(record: dict) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


@settings(max_examples=400, deadline=None)
@given(events)
def test_every_event_is_written_byte_for_byte_as_fastavro_writes_it(event: Event) -> None:
    record = codec.to_record(event)
    parts: list[bytes] = []
    compile_writer(schema)(record, parts)
    assert b"".join(parts) == _fastavro(record)
    assert codec.encode(event)[10:] == _fastavro(record)


reader = compile_reader(catalog().current.decoding)


def _fastavro_read(body: bytes) -> tuple[dict, int]:
    buffer = io.BytesIO(body)
    record = schemaless_reader(buffer, catalog().current.decoding, None, return_record_name=True)
    return {**record, "event_id": str(record["event_id"])}, buffer.tell()


@settings(max_examples=400, deadline=None)
@given(events)
def test_every_event_is_read_as_fastavro_reads_it(event: Event) -> None:
    body = codec.encode(event)[10:]
    assert reader(body, 0) == _fastavro_read(body) == (codec.to_record(event) | {"schema_version": catalog().current.version}, len(body))


@settings(max_examples=500, deadline=None)
@given(events, st.data())
def test_bytes_changed_anywhere_read_as_fastavro_reads_them_or_are_a_corrupt_body(event: Event, data) -> None:
    body = bytearray(codec.encode(event)[10:])
    at = data.draw(st.integers(0, len(body) - 1))
    body[at] = data.draw(st.integers(0, 255))
    cut = bytes(body[:data.draw(st.integers(at, len(body)))])
    try:
        ours = reader(cut, 0)
    except CorruptBody:
        return
    assert ours == _fastavro_read(cut)


def test_lengths_and_counts_past_the_end_are_a_corrupt_body_without_reading_on() -> None:
    body = codec.encode(Event("c-1", 1, EventType.RESPONSE_GENERATED, "agent", {"response": "hi"}))[10:]
    huge = varint(2**40)
    with pytest.raises(CorruptBody, match="remain"):
        reader(huge + body[1:], 0)  # the event id said to be a terabyte long, in a message of a hundred bytes
    with pytest.raises(CorruptBody, match="ten bytes"):
        reader(b"\xff" * 20, 0)
    with pytest.raises(CorruptBody, match="block of"):
        compile_reader({"type": "map", "values": "string"})(huge + b"\x00", 0)
    with pytest.raises(CorruptBody, match="union index"):
        compile_reader(["null", "string"])(b"\x04", 0)


@given(st.integers(min_value=-2**63, max_value=2**63 - 1))
def test_longs_are_zigzag_varints_as_avro_writes_them(n: int) -> None:
    buffer = io.BytesIO()
    schemaless_writer(buffer, "long", n)
    assert varint(n) == buffer.getvalue()


def test_a_long_past_64_bits_and_a_lone_surrogate_are_refused_not_written_wrong() -> None:
    llm = {"model": "m", "input_tokens": 2**64, "output_tokens": 1, "latency_ms": 1.0, "cost_usd": 0.0}
    with pytest.raises(SchemaError):  # the rule refuses it first; the writer would refuse it too
        codec.encode(Event("c-1", 1, EventType.LLM_CALLED, "agent", llm))
    parts: list[bytes] = []
    with pytest.raises(OverflowError):
        compile_writer("long")(2**63, parts)
    with pytest.raises(UnicodeEncodeError):
        compile_writer("string")("\ud800", parts)


def test_a_type_it_does_not_cover_is_not_compilable() -> None:
    with pytest.raises(NotCompilable, match="fixed"):
        compile_writer({"type": "fixed", "name": "F", "size": 4})
    with pytest.raises(NotCompilable, match="union"):
        compile_writer(["string", "long"])
