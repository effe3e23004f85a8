"""Avro single-object encoding of events: ``C3 01``, the writer schema's 8-byte fingerprint, the body.

The reader finds the writer schema by fingerprint, reads with Avro schema resolution
into the current schema, then applies the upcasters of each version step.
"""

from __future__ import annotations

import io
import json
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from agentlog.schemas.binary import NotCompilable, Reader, Writer, compile_reader, compile_writer
from agentlog.schemas.catalog import Catalog, catalog
from agentlog.schemas.errors import KeyMismatch, NotSingleObjectEncoded, SchemaError
from agentlog.schemas.events import NO_ATTRIBUTES, RECORD_TO_TYPE, TYPE_TO_RECORD, TYPES, Event
from agentlog.schemas.rules import DEFAULT_SKEW, check_event
from agentlog.schemas.sealing import Keys, seal, sealed_fields, sealed_with
from agentlog.schemas.upcasters import UPCASTERS
from agentlog.schemas.validation import check_payload, payload_checks

MAGIC = b"\xc3\x01"
_NO_LATER_THAN = datetime(9000, 1, 1, tzinfo=UTC)
"""Decoding without the message's timestamp (a replay): no bound from the future."""
HEADER_SIZE = len(MAGIC) + 8


class Codec:
    """``skew``: how far past now (encoding) or the message's timestamp (decoding) ``occurred_at`` may be."""

    def __init__(self, schemas: Catalog | None = None, *, skew: timedelta = DEFAULT_SKEW,
                 keys: Keys | None = None) -> None:
        self.catalog = schemas or catalog()
        self.skew = skew
        self.keys = keys
        """Where data keys come from: with them, what ``encode`` writes has its text sealed (``schemas.sealing``)."""
        self._schema = self.catalog.current.schema
        self._decoding = self.catalog.current.decoding
        self._header = MAGIC + self.catalog.current.fingerprint
        self._version = self.catalog.current.version
        self._checks = payload_checks(self._schema)
        try:
            self._write: Writer | None = compile_writer(self._schema)
        except NotCompilable:  # a type the compiled writer does not cover: fastavro writes it
            self._write = None
        try:
            self._read: Reader | None = compile_reader(self._decoding)
        except NotCompilable:  # fastavro reads it
            self._read = None

    def encode(self, event: Event, *, now: datetime | None = None) -> bytes:
        """The event's bytes, written with the current schema. Raises SchemaError naming the bad field.
        ``now``: the moment its time may not pass by more than the skew (the clock when None)."""
        record = self.to_record(event, now=now)
        try:
            if self._write is None:
                buffer = io.BytesIO()
                buffer.write(self._header)
                schemaless_writer(buffer, self._schema, record)
                return buffer.getvalue()
            parts = [self._header]
            self._write(record, parts)
            return b"".join(parts)
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            raise SchemaError(self._explain(event, record, exc)) from exc

    def encode_many(self, events: list[Event]) -> list[bytes]:
        """Each event's bytes, as ``encode`` writes them, the clock read once for all; SchemaError naming the
        first bad event."""
        now = datetime.now(UTC)
        if self.keys is not None:
            self.keys.prepare((e.conversation_id, e.subject_id) for e in events if sealed_fields(e.payload))
        return [self.encode(event, now=now) for event in events]

    def sealed(self, event: Event, *, now: datetime | None = None) -> Event:
        """The event as the log keeps it, once it keeps the rule: its text sealed when this codec has keys."""
        self._check(event, now)
        if self.keys is not None and event.sealed is None and sealed_fields(event.payload):
            return seal(event, *self.keys.key_for(event.conversation_id, event.subject_id))
        return event

    def _check(self, event: Event, now: datetime | None) -> str:
        """The event's record name, once it keeps the rule; SchemaError naming what breaks it."""
        event_type = TYPES.get(event.event_type)
        if event_type is None:
            known = ", ".join(TYPES)
            raise SchemaError(f"unknown event type {event.event_type!r}; known types: {known}")
        record_name = TYPE_TO_RECORD[event_type]
        check_payload(event_type, event.payload, self._checks[record_name])
        check_event(event, now=now, skew=self.skew)
        return record_name

    def to_record(self, event: Event, *, now: datetime | None = None) -> dict[str, Any]:
        """The Avro record of an event that keeps the rule (``now``: the moment its time may not pass), its text
        sealed when this codec has keys."""
        record_name = self._check(event, now)
        if self.keys is None:
            payload, key_id, sealed = event.payload, event.key_id, event.sealed
        else:
            key_id, payload, sealed = sealed_with(event, self.keys)
        return {
            "event_id": event.event_id,
            "conversation_id": event.conversation_id,
            "sequence_number": event.sequence_number,
            "event_type": TYPES[event.event_type],
            "occurred_at": event.occurred_at,
            "agent_name": event.agent_name,
            "tenant_id": event.tenant_id,
            "correlation_id": event.correlation_id,
            "causation_id": event.causation_id,
            "schema_version": self._version,
            "payload": (record_name, payload),
            "attributes": event.attributes,
            "subject_id": event.subject_id,
            "key_id": key_id,
            "sealed": sealed,
            "forked_from_conversation": event.forked_from_conversation,
            "forked_from_sequence": event.forked_from_sequence,
        }

    def decode(self, data: bytes, *, key: bytes | None = None, written_at: datetime | None = None) -> Event:
        """An event from its bytes, in the current schema's shape, whatever version wrote it.

        The body must be read to its last byte (bytes after it are a corrupt message, not an event);
        ``key``, the Kafka message's key, must be the event's conversation id when given; the event must
        keep the rule of ``schemas.rules``, its time no later than ``written_at`` (the message's timestamp)
        allows.
        """
        if not isinstance(data, (bytes, bytearray)) or data[:2] != MAGIC or len(data) < HEADER_SIZE:
            raise NotSingleObjectEncoded("not an Avro single-object encoded event (no C3 01 marker)")
        writer = self.catalog.by_fingerprint(bytes(data[2:HEADER_SIZE]))
        try:
            if writer.version == self._version and self._read is not None:  # the compiled reader
                record, end = self._read(bytes(data), HEADER_SIZE)
            else:  # an older writer: fastavro resolves its schema against the current one
                body = io.BytesIO(data)
                body.seek(HEADER_SIZE)
                record = cast(dict[str, Any], schemaless_reader(body, writer.decoding, self._decoding,
                                                                return_record_name=True))
                end = body.tell()
        except (EOFError, ValueError, TypeError, IndexError, KeyError, OverflowError, UnicodeDecodeError,
                MemoryError, struct.error) as exc:
            raise SchemaError(f"corrupt event body (schema v{writer.version}): {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from exc
        if end != len(data):
            raise SchemaError(f"corrupt event: {len(data) - end} byte(s) after the body (schema "
                              f"v{writer.version})")
        for version in range(writer.version, self._version):
            record = UPCASTERS[version](record)
        try:
            event = self.from_record(record, writer.version)
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"corrupt event record (schema v{writer.version}): {str(exc)[:200]}") from exc
        check_event(event, now=written_at or _NO_LATER_THAN, skew=self.skew)
        if key is not None and key != event.conversation_id.encode():
            raise KeyMismatch(f"the message key {key[:80]!r} is not the event's conversation id "
                              f"{event.conversation_id[:80]!r}")
        return event

    @staticmethod
    def from_record(record: dict[str, Any], version: int) -> Event:
        record_name, payload = record["payload"]
        event_type = RECORD_TO_TYPE[record_name]
        if event_type != record["event_type"]:  # a StrEnum equals its text
            raise SchemaError(f"event type {record['event_type']!r} carries a {record_name} payload")
        event_id = record["event_id"]
        return Event(
            conversation_id=record["conversation_id"],
            sequence_number=record["sequence_number"],
            event_type=event_type,
            agent_name=record["agent_name"],
            payload=payload,
            event_id=str(event_id) if isinstance(event_id, uuid.UUID) else event_id,
            occurred_at=record["occurred_at"],
            tenant_id=record["tenant_id"],
            correlation_id=record["correlation_id"],
            causation_id=record["causation_id"],
            schema_version=version,
            attributes=record["attributes"] or NO_ATTRIBUTES,
            subject_id=record.get("subject_id"),
            key_id=record.get("key_id"),
            forked_from_conversation=record.get("forked_from_conversation"),
            forked_from_sequence=record.get("forked_from_sequence"),
            sealed=record.get("sealed"),
        )

    def _explain(self, event: Event, record: dict[str, Any], exc: Exception) -> str:
        where = f"{event.event_type} event (conversation {event.conversation_id}, seq {event.sequence_number})"
        try:
            validate(record, self._schema, raise_errors=True)
        except ValidationError as invalid:
            try:
                problem = json.loads(str(invalid))[0]
            except (ValueError, IndexError):
                problem = str(invalid)
            return f"{where}: {_plain(problem)}"
        return f"{where}: {exc}"


def _plain(problem: str) -> str:
    """fastavro's validation text, said with the payload's field names."""
    return (problem.replace("agentlog.events.AgentEvent.", "")
            .replace("Field(", "field ").replace(") is None expected", " is missing; expected")
            .replace("agentlog.events.", ""))
