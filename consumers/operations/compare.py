"""Two runs side by side: aligned step by step, the first step where they part, and their totals.

A step is the same in both when its type, agent and payload are (ids and times aside: a fork's copies have their
own), so a fork and its source agree up to where the fork went its own way.
"""

from __future__ import annotations

import json
from typing import Any

from agentlog.projections.fold import fold
from agentlog.schemas.events import CONTROL, Event

TOTALS = ("status", "event_count", "llm_calls", "input_tokens", "output_tokens", "cost_usd", "tool_count",
          "error_count", "guardrail_count", "handoff_count", "final_response")
SUMMARY = 160
"""Characters of a step's payload shown beside it."""


def _summary(event: Event) -> str:
    text = json.dumps(dict(event.payload), ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= SUMMARY else text[:SUMMARY - 1] + "…"


def _step(event: Event | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"event_type": event.event_type.value, "agent_name": event.agent_name, "summary": _summary(event)}


def _same(a: Event | None, b: Event | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.event_type, a.agent_name, dict(a.payload)) == (b.event_type, b.agent_name, dict(b.payload))


def compare(a_id: str, a_events: list[Event], b_id: str, b_events: list[Event]) -> dict[str, Any]:
    """The two runs aligned by step; ``first_difference`` the first step where they part (None: the same)."""
    steps_a = {e.sequence_number: e for e in a_events if e.event_type not in CONTROL}
    steps_b = {e.sequence_number: e for e in b_events if e.event_type not in CONTROL}
    steps, first = [], None
    for n in range(1, max([*steps_a, *steps_b, 0]) + 1):
        a, b = steps_a.get(n), steps_b.get(n)
        same = _same(a, b)
        if not same and first is None:
            first = n
        steps.append({"step": n, "same": same, "a": _step(a), "b": _step(b)})
    states = {name: fold(cid, events).as_dict() for name, cid, events in (("a", a_id, a_events), ("b", b_id, b_events))}
    totals = {name: {k: state[k] for k in TOTALS} for name, state in states.items()}
    for name, state in states.items():
        totals[name]["tokens"] = state["input_tokens"] + state["output_tokens"]
        totals[name]["forked_from"] = [state["forked_from_conversation"], state["forked_from_sequence"]] \
            if state["forked_from_conversation"] else None
    return {"a": a_id, "b": b_id, "first_difference": first, "steps": steps, "totals": totals}
