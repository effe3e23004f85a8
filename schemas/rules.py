"""What an event may be: one rule, checked when an event is encoded (the SDK refuses it before sending)
and when it is decoded (every projection dead-letters it alike), so no store keeps what another refuses.

- ids and names: non-empty text of at most 256 characters and 512 bytes (a search document's id takes no
  more), ``event_id`` a UUID in its canonical form;
- no NUL character in any text;
- ``sequence_number`` from 1 to 2^53, every count from 0 to 2^40 (and within an Avro int where it is one);
- every floating-point number from 0 to 10^12 (so that totals stay finite);
- ``occurred_at`` with a time zone, from 1970 to at most ``skew`` after the moment it is checked against
  (now when encoding; the Kafka message's timestamp when decoding, so every reader decides alike);
- every ``*_json`` field valid JSON as orjson reads it (no NaN, no lone surrogate), without NUL, at most 64
  levels deep (the projections read it with orjson too, so they agree on what it holds);
- ``attributes`` (v3): at most 128, each named like an id, its text without NUL and at most 16 KiB.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from agentlog.schemas.errors import SchemaError

MAX_NAME = 256
MAX_DEPTH = 64
LONG = 2**63 - 1
INT = 2**31 - 1
MAX_SEQUENCE = 2**53
"""Sequence numbers stay exact as JSON numbers (a double) and leave room for ``expected = last + 1``."""
MAX_COUNT = 2**40
"""A count of one event (tokens, attempts): sums over a conversation stay far inside a signed 64-bit total."""
MAX_NUMBER = 1e12
"""A number of one event (cost, latency, duration): sums stay finite (JSON has no Infinity)."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_SKEW = timedelta(minutes=5)
SEAL_OVERHEAD = 12 + 16
"""A sealed field's bytes hold at least an AES-GCM nonce (12 bytes) and its tag (16)."""
MAX_ATTRIBUTES = 128
MAX_ATTRIBUTE = 16 * 1024

TEXT = frozenset({"user_message", "reason", "response", "message", "detail", "error", "input_json", "output_json",
                  "args_json", "result_json"})
"""Payload fields of free text (any length the message allows); every other string is a name."""
INTS = frozenset({"step_index", "attempts"})
"""Payload integers that are Avro ints (the rest are longs)."""
JSON = frozenset({"input_json", "output_json", "args_json", "result_json"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class InvalidEvent(SchemaError):
    """An event that breaks the rule: the message names the field and what it must be."""


def check_event(event: Any, *, now: datetime | None = None, skew: timedelta = DEFAULT_SKEW) -> None:
    """InvalidEvent naming the first field that breaks the rule. ``now``: the moment ``occurred_at`` may not
    pass by more than ``skew`` (the current time when None). A few microseconds an event: it runs on every
    encode and every decode."""
    event_id = event.event_id
    if not isinstance(event_id, str) or _UUID.fullmatch(event_id) is None:
        raise InvalidEvent(f"{_where(event)}: event_id {event_id!r:.60} is not a UUID in canonical form "
                           "(8-4-4-4-12 lower-case hex digits)")
    for field, value in (("conversation_id", event.conversation_id), ("agent_name", event.agent_name),
                         ("tenant_id", event.tenant_id)):
        _name(event, field, value)
    for field, value in (("correlation_id", event.correlation_id), ("causation_id", event.causation_id),
                         ("subject_id", event.subject_id), ("key_id", event.key_id),
                         ("forked_from_conversation", event.forked_from_conversation)):
        if value is not None:
            _name(event, field, value)
    _lineage(event)
    if (event.key_id is None) != (event.sealed is None):
        raise InvalidEvent(f"{_where(event)}: key_id and sealed go together (a sealed event names its key)")
    if event.sealed is not None and (not isinstance(event.sealed, bytes) or len(event.sealed) < SEAL_OVERHEAD):
        raise InvalidEvent(f"{_where(event)}: sealed must be bytes of a nonce and a tag at least "
                           f"({SEAL_OVERHEAD} bytes)")
    sequence = event.sequence_number
    if type(sequence) is not int or not 1 <= sequence <= MAX_SEQUENCE:
        _integer(event, "sequence_number", sequence, low=1, high=MAX_SEQUENCE)
    _moment(event, event.occurred_at, now or datetime.now(UTC), skew)
    _payload(event)
    if event.attributes:
        _attributes(event, event.attributes)


def _attributes(event: Any, attributes: Any) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidEvent(f"{_where(event)}: {len(attributes)} attributes; at most {MAX_ATTRIBUTES}")
    for name, value in attributes.items():
        _name(event, "an attribute's name", name)
        if type(value) is not str:
            raise InvalidEvent(f"{_where(event)}: attribute {name!r:.60} must be text, got {type(value).__name__}")
        if len(value) > MAX_ATTRIBUTE // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_ATTRIBUTE:
            raise InvalidEvent(f"{_where(event)}: attribute {name!r:.60} has more than {MAX_ATTRIBUTE:,} bytes")
        if "\x00" in value:
            raise InvalidEvent(f"{_where(event)}: attribute {name!r:.60} holds a NUL character")


def _payload(event: Any) -> None:
    """Every payload field by its kind: text, a name, a number, a count, a list of names."""
    for name, value in event.payload.items():
        kind = type(value)
        if kind is str:
            _string(event, name, value)
        elif kind is float:
            if not 0 <= value <= MAX_NUMBER:  # NaN fails every comparison
                raise InvalidEvent(f"{_where(event)}: {name} must be a finite number from 0 to {MAX_NUMBER:g}, "
                                   f"got {value!r}")
        elif kind is int:
            high = INT if name in INTS else MAX_COUNT
            if not 0 <= value <= high:
                _integer(event, name, value, low=0, high=high)
        elif kind is list or kind is tuple:
            for item in value:
                if type(item) is not str:
                    raise InvalidEvent(f"{_where(event)}: {name} must hold text, got {type(item).__name__}")
                _name(event, name, item)
        elif value is not None and kind is not bool:
            raise InvalidEvent(f"{_where(event)}: {name} has a value of type {kind.__name__}")


def check_text(event: Any, name: str, value: Any) -> None:
    """A text field of ``event`` by the rule (a seal's opened fields, which the decoder did not see)."""
    if type(value) is not str:
        raise InvalidEvent(f"{_where(event)}: {name} must be text, got {type(value).__name__}")
    _string(event, name, value)


def _string(event: Any, name: str, value: str) -> None:
    if name not in TEXT:
        _name(event, name, value)
        return
    if "\x00" in value:
        raise InvalidEvent(f"{_where(event)}: {name} holds a NUL character")
    if name in JSON:
        _json(event, name, value)


def _where(event: Any) -> str:
    return f"{getattr(event.event_type, 'value', event.event_type)} event"


_KNOWN: set[str] = set()
"""Names that kept the rule lately: agents, tenants, conversations and tools come again and again, and a
set lookup is cheaper than the checks. Cleared when it holds _KNOWN_MAX."""
_KNOWN_MAX = 20_000


def _name(event: Any, field: str, value: Any) -> None:
    if type(value) is str and value in _KNOWN:
        return
    _check_name(event, field, value)
    if len(_KNOWN) >= _KNOWN_MAX:
        _KNOWN.clear()
    _KNOWN.add(value)


def _check_name(event: Any, field: str, value: Any) -> None:
    if type(value) is not str or not value:
        raise InvalidEvent(f"{_where(event)}: {field} must be non-empty text, got {value!r:.60}")
    if len(value) > MAX_NAME // 2 and (len(value) > MAX_NAME or len(value.encode("utf-8", "surrogatepass"))
                                       > 2 * MAX_NAME):
        raise InvalidEvent(f"{_where(event)}: {field} has {len(value):,} characters; at most {MAX_NAME} "
                           f"(and {2 * MAX_NAME} bytes in UTF-8)")
    if "\x00" in value:
        raise InvalidEvent(f"{_where(event)}: {field} holds a NUL character")


def _lineage(event: Any) -> None:
    """A fork's events name their source and the step it was forked at (v5), both or neither."""
    if (event.forked_from_conversation is None) != (event.forked_from_sequence is None):
        raise InvalidEvent(f"{_where(event)}: forked_from_conversation and forked_from_sequence go together (a "
                           "fork names its source and the step it was forked at)")
    if event.forked_from_sequence is not None:
        at = event.forked_from_sequence
        if type(at) is not int or not 1 <= at <= MAX_SEQUENCE:
            _integer(event, "forked_from_sequence", at, low=1, high=MAX_SEQUENCE)
        if event.forked_from_conversation == event.conversation_id:
            raise InvalidEvent(f"{_where(event)}: a conversation is not forked from itself")


def _integer(event: Any, field: str, value: Any, *, low: int, high: int) -> None:
    if type(value) is not int:
        raise InvalidEvent(f"{_where(event)}: {field} must be an integer, got {value!r:.60}")
    raise InvalidEvent(f"{_where(event)}: {field} must be from {low} to {high:,}, got {value:,}"[:300])


def _moment(event: Any, value: Any, now: datetime, skew: timedelta) -> None:
    if not isinstance(value, datetime):
        raise InvalidEvent(f"{_where(event)}: occurred_at must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidEvent(f"{_where(event)}: occurred_at has no time zone; use datetime.now(UTC) or an aware "
                           "datetime")
    if value < EPOCH:
        raise InvalidEvent(f"{_where(event)}: occurred_at {value.isoformat()} is before 1970")
    if value > now + skew:
        raise InvalidEvent(f"{_where(event)}: occurred_at {value.isoformat()} is more than "
                           f"{skew.total_seconds():g} s after {now.isoformat(timespec='seconds')} (a clock ahead?)")


def _json(event: Any, field: str, text: str) -> None:
    """Valid JSON as orjson reads it (no NaN, no lone surrogate), no NUL, at most MAX_DEPTH levels deep."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"{_where(event)}: {field} is not valid JSON ({str(exc)[:80]})") from None
    if "\\u0000" in text:
        raise InvalidEvent(f"{_where(event)}: {field} holds a NUL character")
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidEvent(f"{_where(event)}: {field} nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((inner, depth + 1) for inner in item.values())
        elif isinstance(item, list):
            stack.extend((inner, depth + 1) for inner in item)
