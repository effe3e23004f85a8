"""What an event may be: one rule, checked when an event is encoded (the SDK refuses it before sending)
and when it is decoded (every projection dead-letters it alike), so no store keeps what another refuses.

- ids and names: non-empty text of at most 256 characters and 512 bytes (a search document's id takes no
  more), ``event_id`` a UUID in its canonical form;
- no NUL character in any text;
- ``sequence_number`` from 1 to 2^53, every count from 0 to 2^40 (and within an Avro int where it is one);
- every floating-point number from 0 to 10^12 (so that totals stay finite);
- ``occurred_at`` with a time zone, from 1970 to at most ``skew`` after the moment it is checked against
  (now when encoding; the Kafka message's timestamp when decoding, so every reader decides alike);
- every ``*_json`` field valid JSON, without NaN, NUL or integers beyond 64 bits, at most 64 levels deep.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Mapping

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

TEXT = frozenset({"user_message", "reason", "response", "message", "detail", "error", "input_json", "output_json",
                  "args_json", "result_json"})
"""Payload fields of free text (any length the message allows); every other string is a name."""
INTS = frozenset({"step_index", "attempts"})
"""Payload integers that are Avro ints (the rest are longs)."""


class InvalidEvent(SchemaError):
    """An event that breaks the rule: the message names the field and what it must be."""


def check_event(event: Any, *, now: datetime | None = None, skew: timedelta = DEFAULT_SKEW) -> None:
    """InvalidEvent naming the first field that breaks the rule. ``now``: the moment ``occurred_at`` may not
    pass by more than ``skew`` (the current time when None)."""
    where = f"{getattr(event.event_type, 'value', event.event_type)} event"
    _name(where, "event_id", event.event_id)
    try:
        canonical = str(uuid.UUID(event.event_id))
    except (ValueError, TypeError, AttributeError):
        canonical = None
    if canonical != event.event_id:
        raise InvalidEvent(f"{where}: event_id {event.event_id!r:.60} is not a UUID in canonical form "
                           "(8-4-4-4-12 lower-case hex digits)")
    _name(where, "conversation_id", event.conversation_id)
    _name(where, "agent_name", event.agent_name)
    _name(where, "tenant_id", event.tenant_id)
    for name in ("correlation_id", "causation_id"):
        value = getattr(event, name)
        if value is not None:
            _name(where, name, value)
    _integer(where, "sequence_number", event.sequence_number, low=1, high=MAX_SEQUENCE)
    _moment(where, event.occurred_at, now or datetime.now(UTC), skew)
    _payload(where, event.payload)


def _payload(where: str, payload: Mapping[str, Any]) -> None:
    for name, value in payload.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, str):
            if name in TEXT:
                _text(where, name, value)
                if name.endswith("_json"):
                    _json(where, name, value)
            else:
                _name(where, name, value)
        elif isinstance(value, int):
            _integer(where, name, value, low=0, high=INT if name in INTS else MAX_COUNT)
        elif isinstance(value, float):
            if not math.isfinite(value) or not 0 <= value <= MAX_NUMBER:
                raise InvalidEvent(f"{where}: {name} must be a finite number from 0 to {MAX_NUMBER:g}, got {value!r}")
        elif isinstance(value, (list, tuple)):
            for item in value:
                if not isinstance(item, str):
                    raise InvalidEvent(f"{where}: {name} must hold text, got {type(item).__name__}")
                _name(where, name, item)


def _name(where: str, field: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{where}: {field} must be non-empty text, got {value!r:.60}")
    if len(value) > MAX_NAME or len(value.encode("utf-8", "surrogatepass")) > 2 * MAX_NAME:
        raise InvalidEvent(f"{where}: {field} has {len(value):,} characters; at most {MAX_NAME} "
                           f"(and {2 * MAX_NAME} bytes in UTF-8)")
    _text(where, field, value)


def _text(where: str, field: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidEvent(f"{where}: {field} holds a NUL character")


def _integer(where: str, field: str, value: Any, *, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEvent(f"{where}: {field} must be an integer, got {value!r:.60}")
    if not low <= value <= high:
        raise InvalidEvent(f"{where}: {field} must be from {low} to {high:,}, got {value:,}"[:300])


def _moment(where: str, value: Any, now: datetime, skew: timedelta) -> None:
    if not isinstance(value, datetime):
        raise InvalidEvent(f"{where}: occurred_at must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidEvent(f"{where}: occurred_at has no time zone; use datetime.now(UTC) or an aware datetime")
    if value < EPOCH:
        raise InvalidEvent(f"{where}: occurred_at {value.isoformat()} is before 1970")
    if value > now + skew:
        raise InvalidEvent(f"{where}: occurred_at {value.isoformat()} is more than {skew.total_seconds():g} s "
                           f"after {now.isoformat(timespec='seconds')} (a clock ahead?)")


def _json(where: str, field: str, text: str) -> None:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    try:
        value = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"{where}: {field} is not valid JSON ({str(exc)[:80]})") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidEvent(f"{where}: {field} nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, inner in item.items():
                if "\x00" in key:
                    raise InvalidEvent(f"{where}: {field} holds a NUL character")
                stack.append((inner, depth + 1))
        elif isinstance(item, list):
            stack.extend((inner, depth + 1) for inner in item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidEvent(f"{where}: {field} holds a NUL character")
        elif isinstance(item, int) and not isinstance(item, bool) and not -2**63 <= item < 2**64:
            raise InvalidEvent(f"{where}: {field} holds an integer beyond 64 bits")
