"""The GenAI mapping alone: what no store would take still keeps its number, and hostile attribute text
stops nothing."""

from __future__ import annotations

import time

from agentlog.producers.otel import Span, Timeline, points
from agentlog.schemas import Codec


def test_a_span_whose_event_no_store_would_take_keeps_its_number_as_an_error() -> None:
    now = time.time_ns()
    deep = "[" * 100 + "]" * 100  # valid JSON, deeper than the rule's 64 levels
    tool = Span("ab" * 16, "01" * 8, "execute_tool lookup", now, now + 1000, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup", "gen_ai.tool.call.arguments": deep,
        "gen_ai.input.messages": "[" * 5000})  # not JSON, and nested past what Python reads
    chat = Span("ab" * 16, "02" * 8, "chat", now + 2000, now + 3000, {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 3})
    made = [m.event for m in Timeline("conv-deep").feed(p for s in (tool, chat) for p in points(s))]
    assert [e.event_type for e in made] == ["conversation_started", "error_occurred", "tool_result", "llm_called"]
    assert made[1].payload["error_type"] == "unmappable_span" and "nests deeper" in made[1].payload["message"]
    assert [e.sequence_number for e in made] == [1, 2, 3, 4]
    codec = Codec()
    assert all(codec.decode(codec.encode(e)).event_id == e.event_id for e in made)
