"""Factories that build events and conversations for tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from agentlog.schemas.events import Event, EventType

T0 = datetime(2026, 3, 14, 10, 23, tzinfo=UTC)


def make_conversation(*, tools: int = 2, handoff: bool = True, conversation_id: str | None = None,
                      start: datetime = T0) -> list[Event]:
    """The seed's refund conversation, with ``tools`` tool calls and an optional handoff."""
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
