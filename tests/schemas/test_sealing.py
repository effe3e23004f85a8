"""Sealing an event's text: what is sealed, what stays in the clear, and what does not open."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings

from agentlog.schemas import Codec, Event, EventType
from agentlog.schemas.rules import JSON, TEXT, check_event
from agentlog.schemas.sealing import (
    ERASED,
    BrokenSeal,
    _associated,
    erase,
    new_key,
    open_sealed,
    seal,
    sealed_fields,
)
from tests.strategies import events

KEY_ID = "6a1f2c7e-5b0d-4f53-9a8e-0c2d4b6f8a10"


class OneKey:
    """A ``Keys`` of one key for every conversation (the real one is ``deploy.keys.KeyStore``)."""

    def __init__(self) -> None:
        self.key = new_key()
        self.asked: list[tuple[str, str | None]] = []

    def key_for(self, conversation_id: str, subject_id: str | None) -> tuple[str, bytes]:
        self.asked.append((conversation_id, subject_id))
        return KEY_ID, self.key

    def keys(self, key_ids: set[str]) -> dict[str, bytes]:
        return {KEY_ID: self.key} if KEY_ID in key_ids else {}

    def prepare(self, conversations: object) -> None:
        pass


@settings(max_examples=300, deadline=None)
@given(events)
def test_every_event_seals_and_opens_to_itself_and_its_text_is_not_in_its_bytes(event: Event) -> None:
    event = replace(event, key_id=None, sealed=None)
    keys = OneKey()
    codec = Codec(keys=keys)
    data = codec.encode(event)
    read = codec.decode(data)
    fields = sealed_fields(event.payload)
    if not fields:
        assert read.sealed is None and keys.asked == []
        return
    assert read.key_id == KEY_ID and read.sealed is not None
    assert all(read.payload[name] in ("", "null") for name in fields)
    assert {k: v for k, v in read.payload.items() if k not in TEXT} == {k: v for k, v in event.payload.items()
                                                                        if k not in TEXT}
    clear = Codec().encode(replace(read, key_id=None, sealed=None))  # what is not sealed: names, ids, times
    for name in fields:
        text = event.payload[name].encode()
        if len(text) >= 8 and text not in clear:  # long enough not to turn up by chance in the seal
            assert text not in data
    opened = open_sealed(read, keys.key)
    assert opened.payload == event.payload and opened.sealed is None and opened.key_id is None
    check_event(opened)


def test_without_its_key_an_event_reads_erased_and_stays_an_event() -> None:
    event = Event(conversation_id="c-1", sequence_number=2, event_type=EventType.TOOL_CALLED, agent_name="a",
                  payload={"tool_call_id": "t1", "tool_name": "lookup", "input_json": '{"email": "x@y.z"}'})
    sealed = seal(event, KEY_ID, new_key())
    erased = open_sealed(sealed, None)
    assert erased.payload == {"tool_call_id": "t1", "tool_name": "lookup", "input_json": '"[erased]"'}
    assert orjson.loads(erased.payload["input_json"]) == ERASED  # a JSON field stays JSON
    check_event(erased)
    assert erase(event.payload) == erased.payload


def test_a_seal_altered_moved_or_opened_with_another_key_does_not_open() -> None:
    key = new_key()
    first = Event(conversation_id="c-1", sequence_number=1, event_type=EventType.CONVERSATION_STARTED, agent_name="a",
                  payload={"user_message": "my card is 4111 1111 1111 1111", "channel": None})
    other = replace(first, event_id="0b4a7c3e-1d2f-4e5a-8b6c-7d8e9f0a1b2c", payload={"user_message": "",
                                                                                      "channel": None})
    sealed = seal(first, KEY_ID, key)
    assert sealed.sealed is not None
    flipped = bytearray(sealed.sealed)
    flipped[-1] ^= 1
    for broken, key_used in ((replace(sealed, sealed=bytes(flipped)), key),
                             (replace(other, key_id=KEY_ID, sealed=sealed.sealed), key),  # moved to another event
                             (sealed, new_key())):
        with pytest.raises(BrokenSeal, match="do not open"):
            open_sealed(broken, key_used)


def test_a_seal_that_opens_to_what_the_rule_refuses_does_not_open() -> None:
    """A writer with a key may seal anything: what it opens to is held to the rule the decoder applies."""
    key = new_key()
    event = Event(conversation_id="c-1", sequence_number=2, event_type=EventType.TOOL_CALLED, agent_name="a",
                  payload={"tool_call_id": "t1", "tool_name": "lookup", "input_json": "null"})
    for plain in ({"input_json": {"not": "text"}}, {"input_json": "{not json"}, {"input_json": "a\u0000b"},
                  {"input_json": "[" * 100 + "]" * 100}):
        nonce = bytes(12)
        sealed = nonce + AESGCM(key).encrypt(nonce, orjson.dumps(plain), _associated(event))
        with pytest.raises(BrokenSeal, match="breaks the rule"):
            open_sealed(replace(event, key_id=KEY_ID, sealed=sealed), key)


def test_the_sealed_fields_are_the_free_text_ones() -> None:
    assert JSON <= TEXT
    assert sealed_fields({"tool_name": "x", "input_json": "{}", "tool_call_id": "t"}) == ("input_json",)
