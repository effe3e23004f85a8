"""The event: one envelope, a typed payload per event type."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Mapping

from agentlog.schemas.catalog import catalog

NAMESPACE = "agentlog.events"


class EventType(StrEnum):
    CONVERSATION_STARTED = "conversation_started"
    TOOL_CALLED = "tool_called"
    TOOL_RESULT = "tool_result"
    HANDOFF_INITIATED = "handoff_initiated"
    RESPONSE_GENERATED = "response_generated"
    ERROR_OCCURRED = "error_occurred"
    GUARDRAIL_TRIGGERED = "guardrail_triggered"
    LLM_CALLED = "llm_called"
    SAGA_STARTED = "saga_started"
    SAGA_STEP_COMPLETED = "saga_step_completed"
    SAGA_STEP_FAILED = "saga_step_failed"
    SAGA_STEP_COMPENSATED = "saga_step_compensated"
    SAGA_COMPENSATION_FAILED = "saga_compensation_failed"
    SAGA_COMPLETED = "saga_completed"
    SAGA_ROLLED_BACK = "saga_rolled_back"
    SUBJECT_FORGOTTEN = "subject_forgotten"

    @property
    def record(self) -> str:
        """The full name of this type's payload record in the Avro schema."""
        return TYPE_TO_RECORD[self]


class ConversationStatus(StrEnum):
    """Where a conversation stands, as its events say (``ConversationState.status``)."""

    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    BLOCKED = "blocked"
    ROLLED_BACK = "rolled_back"
    NEEDS_INTERVENTION = "needs_intervention"


class SagaStatus(StrEnum):
    """Where a saga stands, as its events say (``SagaState.status``)."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    NEEDS_INTERVENTION = "needs_intervention"
    """A compensation failed for good: a person must step in."""


def _record_name(value: str) -> str:
    return f"{NAMESPACE}.{''.join(part.title() for part in value.split('_'))}"


TYPE_TO_RECORD = {t: _record_name(t.value) for t in EventType}
"""Keyed by EventType; as EventType is a StrEnum, the plain strings find the same entries."""
RECORD_TO_TYPE = {record: t for t, record in TYPE_TO_RECORD.items()}
TYPES = {t.value: t for t in EventType}
SAGA_PREFIX = "saga_"
CONTROL = frozenset({EventType.SUBJECT_FORGOTTEN})
"""Events about a conversation's data, not of it: stores act on them and do not count or chain them."""


def _now() -> datetime:
    return datetime.now(UTC)


def _current_version() -> int:
    return catalog().current.version


NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Event:
    """One immutable fact about a conversation. ``payload`` holds the fields of its type's record."""

    conversation_id: str
    sequence_number: int
    event_type: EventType
    agent_name: str
    payload: Mapping[str, Any]
    event_id: str = field(default_factory=_new_id)
    occurred_at: datetime = field(default_factory=_now)
    tenant_id: str = "default"
    correlation_id: str | None = None
    causation_id: str | None = None
    schema_version: int = field(default_factory=_current_version)
    """The catalog version the event was written with (decoded events keep their writer's)."""
    attributes: Mapping[str, str] = field(default_factory=lambda: NO_ATTRIBUTES)
    """What the event's source said of it that no field holds (v3): an OpenTelemetry span's unmapped
    attributes, say. Values are text (JSON for structured ones)."""
    subject_id: str | None = None
    """Whose personal data the event carries (v4): what ``agentlog forget --subject`` names."""
    key_id: str | None = None
    sealed: bytes | None = None
    """Set on an event as the log holds it (v4, ``schemas.sealing``): its text fields encrypted under the data
    key ``key_id``, and empty in ``payload``. Opened events have neither."""
    forked_from_conversation: str | None = None
    forked_from_sequence: int | None = None
    """On the events a fork copied (v5): the conversation it was forked from, and the last step copied."""
