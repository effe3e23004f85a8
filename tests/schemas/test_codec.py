"""The codec: single-object encoding, round trips over every event type, evolution and compatibility."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from datetime import UTC, datetime

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentlog.schemas import Catalog, Codec, Event, EventType, IncompatibleSchema, SchemaError, UnknownFingerprint
from agentlog.schemas.catalog import AVRO_DIR, catalog
from agentlog.schemas.codec import MAGIC
from agentlog.schemas.compatibility import check_catalog
from tests.factories import make_conversation
from tests.strategies import PAYLOADS, events

codec = Codec()
def test_every_event_type_has_a_payload_strategy() -> None:
    assert set(PAYLOADS) == set(EventType)


@settings(max_examples=300, deadline=None)
@given(events)
def test_any_event_round_trips(event: Event) -> None:
    data = codec.encode(event)
    assert data[:2] == MAGIC
    assert data[2:10] == catalog().current.fingerprint
    assert codec.decode(data) == event


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_a_schema_error_and_nothing_else(data: bytes) -> None:
    try:
        codec.decode(MAGIC + catalog().current.fingerprint + data)
    except SchemaError:
        pass


def test_bytes_without_the_marker_or_with_an_unknown_fingerprint_are_refused() -> None:
    data = codec.encode(make_conversation()[0])
    with pytest.raises(SchemaError, match="C3 01"):
        codec.decode(b"{" + data[1:])
    with pytest.raises(UnknownFingerprint, match="fingerprint"):
        codec.decode(MAGIC + b"\x00" * 8 + data[10:])


def _v1_bytes(record: dict) -> bytes:
    v1 = catalog().versions[1]
    buffer = io.BytesIO(MAGIC + v1.fingerprint)
    buffer.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(buffer, v1.schema, record)
    return buffer.getvalue()


def _v1_record(kind: str, payload_name: str, payload: dict) -> dict:
    return {"event_id": "8a3c7c1e-3f52-4d43-9d0c-2f8f3c1a6b11", "conversation_id": "conv-8842", "sequence_number": 2,
            "event_type": kind, "occurred_at": datetime(2026, 3, 14, 10, 23, 1, tzinfo=UTC),
            "agent_name": "triage-agent", "tenant_id": "acme", "correlation_id": None, "causation_id": None,
            "schema_version": 1, "payload": (f"agentlog.events.{payload_name}", payload)}


def test_a_v1_tool_call_reads_as_v2_through_the_alias() -> None:
    event = codec.decode(_v1_bytes(_v1_record("tool_called", "ToolCalled", {
        "tool_call_id": "c1", "tool": "lookup_order", "input_json": '{"order_id": "ORD-5521"}'})))
    assert event.schema_version == 1
    assert event.payload == {"tool_call_id": "c1", "tool_name": "lookup_order",
                             "input_json": '{"order_id": "ORD-5521"}'}


@pytest.mark.parametrize("output, status", [('{"refund_id": "REF-3301"}', "ok"), ('{"error": "card declined"}', "error")])
def test_a_v1_tool_result_gets_defaults_and_the_upcasters_status(output: str, status: str) -> None:
    event = codec.decode(_v1_bytes(_v1_record("tool_result", "ToolResult", {
        "tool_call_id": "c1", "tool": "issue_refund", "output_json": output})))
    assert event.payload == {"tool_call_id": "c1", "tool_name": "issue_refund", "output_json": output,
                             "status": status, "duration_ms": None}


def _written_with(version: int, record: dict) -> bytes:
    schema = catalog().versions[version]
    buffer = io.BytesIO(MAGIC + schema.fingerprint)
    buffer.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(buffer, schema.schema, record)
    return buffer.getvalue()


def test_a_v2_event_and_a_v3_event_with_attributes_read_side_by_side() -> None:
    record = {**_v1_record("response_generated", "ResponseGenerated", {"response": "done"}), "schema_version": 2}
    old = codec.decode(_written_with(2, record))
    assert old.schema_version == 2 and dict(old.attributes) == {}
    new = codec.decode(codec.encode(dataclasses.replace(
        old, sequence_number=3, event_id="8a3c7c1e-3f52-4d43-9d0c-2f8f3c1a6b12",
        attributes={"gen_ai.provider.name": "openai", "app.tags": '["a", "b"]'})))
    assert new.schema_version == catalog().current.version >= 3
    assert dict(new.attributes) == {"gen_ai.provider.name": "openai", "app.tags": '["a", "b"]'}
    assert new.payload == old.payload


@pytest.mark.parametrize("attributes, message", [
    ({f"a{i}": "x" for i in range(129)}, "129 attributes; at most 128"),
    ({"a": "x" * 20_000}, "more than 16,384 bytes"),
    ({"a": "x\x00y"}, "NUL"),
    ({"": "x"}, "name"),
])
def test_attributes_past_the_rule_are_refused_at_encode(attributes: dict, message: str) -> None:
    event = dataclasses.replace(make_conversation()[0], attributes=attributes)
    with pytest.raises(SchemaError, match=message):
        codec.encode(event)


def test_every_version_reads_every_older_one() -> None:
    check_catalog(catalog())
    assert len(catalog().versions) >= 2


def _copy_catalog(tmp_path):
    target = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, target)
    current = max(target.glob("agent_event.v*.avsc"))
    return target, current, json.loads(current.read_text())


def _payload(schema: dict, name: str) -> dict:
    union = next(f for f in schema["fields"] if f["name"] == "payload")["type"]
    return next(r for r in union if r["name"] == name)


@pytest.mark.parametrize("breaking_change", ["new field without default", "type narrowed", "branch removed"])
def test_an_incompatible_new_version_fails_the_check(tmp_path, breaking_change: str) -> None:
    target, current, schema = _copy_catalog(tmp_path)
    llm = _payload(schema, "LlmCalled")
    if breaking_change == "new field without default":
        llm["fields"].append({"name": "region", "type": "string"})
    elif breaking_change == "type narrowed":
        next(f for f in llm["fields"] if f["name"] == "input_tokens")["type"] = "int"
    else:
        union = next(f for f in schema["fields"] if f["name"] == "payload")["type"]
        union.remove(llm)
    (target / "agent_event.v99.avsc").write_text(json.dumps(schema))
    with pytest.raises(IncompatibleSchema, match="v99"):
        check_catalog(Catalog(target))


def test_a_compatible_new_version_passes_the_check(tmp_path) -> None:
    target, current, schema = _copy_catalog(tmp_path)
    _payload(schema, "LlmCalled")["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    (target / "agent_event.v99.avsc").write_text(json.dumps(schema))
    check_catalog(Catalog(target))


@pytest.mark.parametrize("event, message", [
    (Event("c", 1, "tool_invoked", "a", {}), "unknown event type 'tool_invoked'"),
    (Event("c", 1, EventType.TOOL_CALLED, "a", {"tool_call_id": "x", "input_json": "{}"}), "'tool_name' is missing"),
    (Event("c", 1, EventType.LLM_CALLED, "a", {"model": "m", "input_tokens": "many", "output_tokens": 1,
                                                "latency_ms": 1.0, "cost_usd": 0.1}), "'input_tokens' must be long"),
    (Event("c", 1, EventType.RESPONSE_GENERATED, "a", {"response": "hi", "respnse": "typo"}), "unknown field.*respnse"),
    (Event("c", 1, EventType.LLM_CALLED, "a", {"model": "m", "input_tokens": 1.5, "output_tokens": 1,
                                                "latency_ms": 1.0, "cost_usd": 0.1}), "must be long, got float"),
])
def test_bad_events_get_a_clear_error(event: Event, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        codec.encode(event)
