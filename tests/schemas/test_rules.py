"""One rule for what an event may be: the SDK's encoder refuses a bad event naming the field, and the decoder
refuses the same event written by another writer (so every projection dead-letters it alike). The decoder,
fuzzed, decodes or raises the codec's own error, never anything else."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentlog.schemas import Codec, Event, EventType, SchemaError
from agentlog.schemas.errors import KeyMismatch
from agentlog.schemas.rules import InvalidEvent
from tests.factories import written_without_the_rule
from tests.strategies import events

codec = Codec()
T = datetime(2026, 3, 14, 10, 23, tzinfo=UTC)
LLM = {"model": "gpt-x", "input_tokens": 10, "output_tokens": 5, "latency_ms": 120.0, "cost_usd": 0.01}


def llm(**payload) -> Event:
    return Event("conv-1", 1, EventType.LLM_CALLED, "agent", {**LLM, **payload}, occurred_at=T)


def said(text: str) -> Event:
    return Event("conv-1", 1, EventType.RESPONSE_GENERATED, "agent", {"response": text}, occurred_at=T)


BAD = [
    (llm(cost_usd=float("nan")), "cost_usd must be a finite number"),
    (llm(latency_ms=float("inf")), "latency_ms must be a finite number"),
    (llm(cost_usd=-0.5), "cost_usd must be a finite number from 0 to 1e+12"),
    (llm(cost_usd=1.6e308), "cost_usd must be a finite number from 0 to 1e+12"),
    (llm(input_tokens=-3), "input_tokens must be from 0"),
    (llm(output_tokens=2**70), "output_tokens must be from 0"),
    (said("hello\x00world"), "response holds a NUL character"),
    (replace(said("hi"), conversation_id="conv\x00x"), "conversation_id holds a NUL character"),
    (replace(said("hi"), conversation_id=""), "conversation_id must be non-empty text"),
    (replace(said("hi"), conversation_id="c" * 257), "conversation_id has 257 characters; at most 256"),
    (replace(said("hi"), agent_name=""), "agent_name must be non-empty text"),
    (replace(said("hi"), event_id="not-a-uuid"), "event_id 'not-a-uuid' is not a UUID in canonical form"),
    (replace(said("hi"), event_id=str(uuid.uuid4()).upper()), "is not a UUID in canonical form"),
    (replace(said("hi"), occurred_at=datetime(2026, 3, 14, 10, 23)), "occurred_at has no time zone"),
    (replace(said("hi"), occurred_at=datetime(9999, 1, 1, tzinfo=UTC)), "occurred_at 9999-01-01"),
    (replace(said("hi"), occurred_at=datetime(1969, 12, 31, tzinfo=UTC)), "is before 1970"),
    (replace(said("hi"), sequence_number=2**70), "sequence_number must be from 1"),
    (replace(said("hi"), sequence_number=0), "sequence_number must be from 1"),
    (Event("c", 1, EventType.TOOL_CALLED, "a", {"tool_call_id": "t", "tool_name": "x", "input_json": "{nope"},
           occurred_at=T), "input_json is not valid JSON"),
    (Event("c", 1, EventType.TOOL_CALLED, "a", {"tool_call_id": "t", "tool_name": "x", "input_json": "[NaN]"},
           occurred_at=T), "input_json is not valid JSON"),
    (Event("c", 1, EventType.TOOL_CALLED, "a", {"tool_call_id": "t", "tool_name": "x",
                                                "input_json": '{"a": "\\u0000"}'}, occurred_at=T),
     "input_json holds a NUL character"),
    (Event("c", 1, EventType.TOOL_CALLED, "a", {"tool_call_id": "t", "tool_name": "x",
                                                "input_json": "[" * 100 + "]" * 100}, occurred_at=T),
     "input_json nests deeper than 64 levels"),
    (Event("c", 1, EventType.TOOL_CALLED, "a", {"tool_call_id": "t", "tool_name": "x",
                                                "input_json": "[" * 100_000 + "]" * 100_000}, occurred_at=T),
     "input_json is not valid JSON"),
    (Event("c", 1, EventType.TOOL_CALLED, "a", {"tool_call_id": "t", "tool_name": "x",
                                                "input_json": '"\\ud800"'}, occurred_at=T),
     "input_json is not valid JSON"),
]


@pytest.mark.parametrize("event,message", BAD, ids=[m for _, m in BAD])
def test_the_sdk_refuses_what_a_store_would_refuse(event: Event, message: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        codec.encode(event)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def _written_by_another_writer(event: Event) -> bytes:
    try:
        return written_without_the_rule(event)
    except (ValueError, OverflowError) as exc:
        pytest.skip(f"Avro itself cannot carry it: {exc}")


@pytest.mark.parametrize("event,message", [b for b in BAD if "time zone" not in b[1]],  # the wire has no naive time
                         ids=[m for _, m in BAD if "time zone" not in m])
def test_the_decoder_refuses_the_same_from_another_writer(event: Event, message: str) -> None:
    data = _written_by_another_writer(event)
    with pytest.raises(InvalidEvent, match=message.split(" ")[0]):
        codec.decode(data, key=event.conversation_id.encode(), written_at=T + timedelta(seconds=1))


def test_the_future_is_judged_by_the_message_timestamp() -> None:
    event = replace(said("hi"), occurred_at=T + timedelta(hours=1))
    data = _written_by_another_writer(event)
    with pytest.raises(InvalidEvent, match="after 2026-03-14T10:23:00"):
        codec.decode(data, written_at=T)
    assert codec.decode(data, written_at=T + timedelta(hours=1)) == event


def test_trailing_bytes_and_a_foreign_key_are_poison() -> None:
    event = said("hi")
    data = codec.encode(event)
    assert codec.decode(data, key=b"conv-1") == event
    with pytest.raises(SchemaError, match="3 byte\\(s\\) after the body"):
        codec.decode(data + b"junk"[:3])
    with pytest.raises(KeyMismatch, match="is not the event's conversation id"):
        codec.decode(data, key=b"conv-2")


@settings(max_examples=300, deadline=None)
@given(events, st.data())
def test_a_mutated_event_decodes_or_raises_the_codecs_error(event: Event, data) -> None:
    """Fuzz: flip, insert or drop bytes of a valid event's body."""
    original = bytearray(codec.encode(event))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(10, max(10, len(original) - 1)))
        action = data.draw(st.sampled_from(["flip", "insert", "drop", "truncate"]))
        if action == "flip" and at < len(original):
            original[at] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            original[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "drop" and at < len(original):
            del original[at]
        elif action == "truncate":
            del original[at:]
    try:
        codec.decode(bytes(original))
    except SchemaError:
        pass
