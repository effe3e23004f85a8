"""Crypto-shredding: the text an event carries is encrypted in the log under a data key per conversation.

The fields that hold what people wrote or what tools returned (``rules.TEXT``: user messages,
responses, tool inputs and outputs, error messages, guardrail details, handoff reasons, saga arguments,
results and errors) are sealed: the payload keeps an empty text (``null`` for a JSON field) and the
event carries ``key_id`` and ``sealed``, a 12-byte nonce then AES-256-GCM of the JSON object of those
fields, with the event's id, conversation id and type as associated data (a seal moved to another event
does not open). Identity, type, agent, times, token counts, costs, names and statuses stay in the clear,
so analytics keep working.

Opening needs the data key. When it was deleted (``agentlog forget``) the fields read as ``ERASED``: a
text is ``[erased]``, a JSON field the JSON string ``"[erased]"``. Keys come from a ``Keys`` (the key
store, ``deploy.keys``); this module only encrypts.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from typing import Any, Iterable, Mapping, Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentlog.schemas.errors import SchemaError
from agentlog.schemas.events import Event
from agentlog.schemas.rules import JSON, TEXT, InvalidEvent, check_text

ERASED = "[erased]"
ERASED_JSON = '"[erased]"'
NONCE = 12
KEY_BYTES = 32


class BrokenSeal(SchemaError):
    """A seal that does not open with its key: altered bytes, or a seal moved from another event."""


class Keys(Protocol):
    """Where data keys come from: one per conversation, named by a key id."""

    def key_for(self, conversation_id: str, subject_id: str | None) -> tuple[str, bytes]:
        """The conversation's data key (made on first use): its id and its 32 bytes."""

    def keys(self, key_ids: set[str]) -> Mapping[str, bytes]:
        """The keys of ``key_ids`` that exist; a deleted one is absent."""

    def prepare(self, conversations: Iterable[tuple[str, str | None]]) -> None:
        """Have the keys of these (conversation, subject) pairs at hand: a batch asks for them at once."""


def sealed_fields(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """The payload's text fields (those sealed), in its order."""
    return _text_of(payload)[0]


_SHAPES: dict[tuple[str, ...], tuple[tuple[str, ...], dict[str, str]]] = {}
"""Per payload shape (its field names): its text fields and their blanks. The schema's payloads have a few dozen
shapes; a payload of another shape (it fails the schema's check) is not kept past ``_MAX_SHAPES``."""
_MAX_SHAPES = 1024


def _text_of(payload: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, str]]:
    shape = tuple(payload)
    found = _SHAPES.get(shape)
    if found is None:
        fields = tuple(name for name in shape if name in TEXT)
        found = (fields, {name: _blank(name) for name in fields})
        if len(_SHAPES) < _MAX_SHAPES:
            _SHAPES[shape] = found
    return found


def _blank(name: str) -> str:
    return "null" if name in JSON else ""


def _erased(name: str) -> str:
    return ERASED_JSON if name in JSON else ERASED


@functools.lru_cache(maxsize=4096)
def _aead(key: bytes) -> AESGCM:
    """A cipher per key, made once (making one is a third of sealing a short text)."""
    return AESGCM(key)


class _Nonces:
    """AES-GCM nonces without a system call each (one cost a third of sealing here): 8 random bytes drawn once
    per process (again after a fork, and after 2**32 nonces), then a 4-byte counter. A nonce never repeats in a
    process; a data key is sealed with by one producer process only (each takes its own keys), and two
    processes would also need the same 64 random bits for a key to meet a nonce twice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._draw()

    def _draw(self) -> None:
        self._prefix = os.urandom(NONCE - 4)
        self._counter = itertools.count()

    def next(self) -> bytes:
        number = next(self._counter)
        if number >= 1 << 32:
            with self._lock:
                self._draw()
                number = next(self._counter)
        return self._prefix + number.to_bytes(4, "big")


_NONCES = _Nonces()
os.register_at_fork(after_in_child=_NONCES._draw)


def _with(event: Event, payload: Mapping[str, Any], key_id: str | None, sealed: bytes | None) -> Event:
    """The event with another payload and seal (``dataclasses.replace`` takes half of sealing's time)."""
    return Event(event.conversation_id, event.sequence_number, event.event_type, event.agent_name, payload,
                 event.event_id, event.occurred_at, event.tenant_id, event.correlation_id, event.causation_id,
                 event.schema_version, event.attributes, event.subject_id, key_id, sealed,
                 event.forked_from_conversation, event.forked_from_sequence)


def _associated(event: Event) -> bytes:
    return f"{event.event_id}\x00{event.conversation_id}\x00{event.event_type}".encode()


def seal(event: Event, key_id: str, key: bytes) -> Event:
    """The event as the log keeps it: its text fields encrypted, blank in the payload. An event with no text
    field (an LLM call, a saga's end) is returned as it is."""
    parts = sealed_parts(event, key)
    return event if parts is None else _with(event, parts[0], key_id, parts[1])


def sealed_parts(event: Event, key: bytes) -> tuple[dict[str, Any], bytes] | None:
    """What sealing changes of an event: its payload with the text fields blank, and the seal (None when it
    has no text field, or is sealed already). The codec writes these without making a new Event."""
    payload = event.payload
    fields, blanks = _text_of(payload)
    if not fields or event.sealed is not None:
        return None
    return _sealed(event, key, fields, blanks)


def sealed_with(event: Event, keys: Keys) -> tuple[str | None, Mapping[str, Any], bytes | None]:
    """The event's key id, payload and seal as the log keeps them: sealed under its conversation's key when it
    has text fields and is not sealed yet (the key is asked for only then), else as they are."""
    payload = event.payload
    if event.sealed is None:
        fields, blanks = _text_of(payload)
        if fields:
            key_id, key = keys.key_for(event.conversation_id, event.subject_id)
            sealed_payload, sealed = _sealed(event, key, fields, blanks)
            return key_id, sealed_payload, sealed
    return event.key_id, payload, event.sealed


def _sealed(event: Event, key: bytes, fields: tuple[str, ...], blanks: dict[str, str]) -> tuple[dict[str, Any], bytes]:
    payload = event.payload
    plain = orjson.dumps({name: payload[name] for name in fields})
    nonce = _NONCES.next()
    sealed = nonce + _aead(key).encrypt(nonce, plain, _associated(event))
    return {**payload, **blanks}, sealed


def open_sealed(event: Event, key: bytes | None) -> Event:
    """The event with its text fields back (``key`` None: the key was deleted, they read as erased).
    BrokenSeal when the seal does not open with the key."""
    if event.sealed is None:
        return event
    fields = sealed_fields(event.payload)
    if key is None:
        restored: dict[str, Any] = {name: _erased(name) for name in fields}
    else:
        try:
            plain = _aead(key).decrypt(event.sealed[:NONCE], event.sealed[NONCE:], _associated(event))
            opened = orjson.loads(plain)
        except (InvalidTag, ValueError) as exc:
            raise BrokenSeal(f"conversation {event.conversation_id[:80]}, seq {event.sequence_number}: its sealed "
                             f"fields do not open with key {event.key_id} ({type(exc).__name__})") from None
        if not isinstance(opened, dict) or set(opened) != set(fields):
            raise BrokenSeal(f"conversation {event.conversation_id[:80]}, seq {event.sequence_number}: its seal "
                             "holds other fields than its payload's text fields")
        for name, value in opened.items():  # what was sealed keeps the rule as what the decoder read does
            try:
                check_text(event, name, value)
            except InvalidEvent as exc:
                raise BrokenSeal(f"conversation {event.conversation_id[:80]}, seq {event.sequence_number}: its "
                                 f"seal opens to a field that breaks the rule: {exc}") from None
        restored = opened
    return _with(event, {**event.payload, **restored}, None, None)


def seal_bytes(key: bytes, plain: bytes, associated: bytes) -> bytes:
    """``plain`` sealed under ``key`` (a 12-byte nonce, then AES-256-GCM), bound to ``associated``."""
    nonce = _NONCES.next()
    return nonce + _aead(key).encrypt(nonce, plain, associated)


def open_bytes(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """What ``seal_bytes`` sealed; BrokenSeal when it does not open with ``key`` and ``associated``."""
    try:
        return _aead(key).decrypt(sealed[:NONCE], sealed[NONCE:], associated)
    except (InvalidTag, ValueError):
        raise BrokenSeal("a seal that does not open with its key") from None


def erase(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A payload with its text fields erased (what a store keeps after ``forget``)."""
    return {**payload, **{name: _erased(name) for name in sealed_fields(payload)}}


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)
