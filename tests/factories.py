"""Factories that build events and conversations for tests."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import fastavro

from agentlog.schemas.catalog import catalog
from agentlog.schemas.codec import MAGIC
from agentlog.schemas.events import Event, EventType

T0 = datetime(2026, 3, 14, 10, 23, tzinfo=UTC)


def make_conversation(*, tools: int = 2, handoff: bool = True, conversation_id: str | None = None,
                      start: datetime = T0) -> list[Event]:
    """The refund scenario's conversation, with ``tools`` tool calls and an optional handoff."""
    cid = conversation_id or f"conv-{uuid.uuid4().hex[:12]}"
    events: list[Event] = []

    def add(kind: EventType, agent: str, payload: dict) -> None:
        events.append(Event(cid, len(events) + 1, kind, agent, payload,
                            occurred_at=start + timedelta(seconds=len(events))))

    agent = "triage-agent"
    add(EventType.CONVERSATION_STARTED, agent, {"user_message": "I want a refund for order ORD-5521", "channel": None})
    for i in range(tools):
        if handoff and i == 1:
            add(EventType.HANDOFF_INITIATED, agent, {"from_agent": agent, "to_agent": "refund-agent",
                                                     "reason": "User requesting refund on delivered order"})
            agent = "refund-agent"
        call = f"call-{i}"
        add(EventType.TOOL_CALLED, agent, {"tool_call_id": call, "tool_name": f"tool_{i}",
                                           "input_json": json.dumps({"order_id": "ORD-5521"})})
        add(EventType.TOOL_RESULT, agent, {"tool_call_id": call, "tool_name": f"tool_{i}",
                                           "output_json": json.dumps({"ok": True}), "status": "ok",
                                           "duration_ms": 12.5})
    add(EventType.RESPONSE_GENERATED, agent, {"response": "I have issued a partial refund of $44.99..."})
    return events


def written_without_the_rule(event: Event) -> bytes:
    """The event's bytes from a writer that keeps no rule of ours (fastavro with our schema, nothing else), as
    a producer in another language might write them. Raises what fastavro raises for what Avro cannot carry."""
    current = catalog().current
    buffer = io.BytesIO()
    buffer.write(MAGIC + current.fingerprint)
    fastavro.schemaless_writer(buffer, current.schema, {
        "event_id": event.event_id, "conversation_id": event.conversation_id,
        "sequence_number": event.sequence_number, "event_type": event.event_type.value,
        "occurred_at": event.occurred_at, "agent_name": event.agent_name, "tenant_id": event.tenant_id,
        "correlation_id": None, "causation_id": None, "schema_version": current.version,
        "payload": (event.event_type.record, dict(event.payload))})
    return buffer.getvalue()


def make_saga(*, steps: tuple[str, ...] = ("check_calendar", "reserve_room", "send_invite"), fail_at: str | None = None,
              compensation_fails: str | None = None, conversation_id: str = "conv-saga", saga_id: str = "saga-1",
              start: datetime = T0) -> list[Event]:
    """A saga's events as the orchestrator writes them: every step completed, or a failure at ``fail_at`` and
    the completed steps compensated in reverse (``compensation_fails`` failing for good)."""
    events: list[Event] = []

    def add(kind: EventType, payload: dict) -> None:
        events.append(Event(conversation_id, len(events) + 1, kind, "saga-orchestrator", {"saga_id": saga_id, **payload},
                            occurred_at=start + timedelta(seconds=len(events))))

    add(EventType.SAGA_STARTED, {"saga_name": "book_demo_meeting", "steps": list(steps),
                                 "args_json": json.dumps({s: {"n": i} for i, s in enumerate(steps)})})
    done: list[str] = []
    for index, step in enumerate(steps):
        if step == fail_at:
            add(EventType.SAGA_STEP_FAILED, {"step": step, "step_index": index, "idempotency_key": f"{saga_id}:{step}",
                                             "error": "no free slot", "attempts": 3})
            break
        add(EventType.SAGA_STEP_COMPLETED, {"step": step, "step_index": index, "idempotency_key": f"{saga_id}:{step}",
                                            "attempts": 1, "result_json": json.dumps({"step": step})})
        done.append(step)
    else:
        add(EventType.SAGA_COMPLETED, {})
        return events
    for step in reversed(done):
        index = steps.index(step)
        if step == compensation_fails:
            add(EventType.SAGA_COMPENSATION_FAILED, {"step": step, "step_index": index, "error": "refused",
                                                     "attempts": 3})
        else:
            add(EventType.SAGA_STEP_COMPENSATED, {"step": step, "step_index": index, "result_json": "{}"})
    add(EventType.SAGA_ROLLED_BACK, {"failed_step": fail_at, "reason": "no free slot"})
    return events
