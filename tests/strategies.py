"""Hypothesis strategies for events: everything the rule of ``schemas.rules`` accepts, as hostile as it allows."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import strategies as st

from agentlog.schemas import Event, EventType

ALPHABET = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
"""Any character a text may hold: every plane, controls, right-to-left marks, markup; no NUL, no lone surrogate."""
text = st.text(ALPHABET, max_size=40) | st.sampled_from(["<em>x</em>", "'; DROP TABLE x; --", "é\u202e", " "])
name = st.text(ALPHABET, min_size=1, max_size=40) | st.sampled_from(["<b>", "a" * 256, "конверсация", "🤖"])
json_text = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | text, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8).map(lambda value: json.dumps(value, ensure_ascii=False))
micros = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC))
longs = st.integers(min_value=0, max_value=2**40)
doubles = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False, width=64)

PAYLOADS = {
    EventType.CONVERSATION_STARTED: st.fixed_dictionaries({"user_message": text, "channel": st.none() | name}),
    EventType.TOOL_CALLED: st.fixed_dictionaries({"tool_call_id": name, "tool_name": name, "input_json": json_text}),
    EventType.TOOL_RESULT: st.fixed_dictionaries({"tool_call_id": name, "tool_name": name, "output_json": json_text,
                                                  "status": st.sampled_from(["ok", "error"]),
                                                  "duration_ms": st.none() | doubles}),
    EventType.HANDOFF_INITIATED: st.fixed_dictionaries({"from_agent": name, "to_agent": name, "reason": text}),
    EventType.RESPONSE_GENERATED: st.fixed_dictionaries({"response": text}),
    EventType.ERROR_OCCURRED: st.fixed_dictionaries({"error_type": name, "message": text,
                                                     "tool_call_id": st.none() | name, "retryable": st.booleans()}),
    EventType.GUARDRAIL_TRIGGERED: st.fixed_dictionaries({"guardrail": name, "action": name, "detail": text}),
    EventType.LLM_CALLED: st.fixed_dictionaries({"model": name, "input_tokens": longs, "output_tokens": longs,
                                                 "latency_ms": doubles, "cost_usd": doubles}),
    EventType.SAGA_STARTED: st.fixed_dictionaries({"saga_id": name, "saga_name": name, "steps": st.lists(name, max_size=4),
                                                   "args_json": json_text}),
    EventType.SAGA_STEP_COMPLETED: st.fixed_dictionaries({"saga_id": name, "step": name, "step_index": st.integers(0, 99),
                                                          "idempotency_key": name, "result_json": json_text,
                                                          "attempts": st.integers(1, 9)}),
    EventType.SAGA_STEP_FAILED: st.fixed_dictionaries({"saga_id": name, "step": name, "step_index": st.integers(0, 99),
                                                       "idempotency_key": name, "error": text,
                                                       "attempts": st.integers(1, 9)}),
    EventType.SAGA_STEP_COMPENSATED: st.fixed_dictionaries({"saga_id": name, "step": name,
                                                            "step_index": st.integers(0, 99), "result_json": json_text}),
    EventType.SAGA_COMPENSATION_FAILED: st.fixed_dictionaries({"saga_id": name, "step": name,
                                                               "step_index": st.integers(0, 99), "error": text,
                                                               "attempts": st.integers(1, 9)}),
    EventType.SAGA_COMPLETED: st.fixed_dictionaries({"saga_id": name}),
    EventType.SAGA_ROLLED_BACK: st.fixed_dictionaries({"saga_id": name, "failed_step": name, "reason": text}),
    EventType.SUBJECT_FORGOTTEN: st.fixed_dictionaries({"subject_id": st.none() | name, "requested_by": name,
                                                        "key_ids": st.lists(st.uuids().map(str), max_size=3)}),
}
forks = st.none() | st.tuples(name, st.integers(1, 2**53))
"""Not a fork, or the conversation it was forked from and the step."""
seals = st.none() | st.tuples(st.uuids().map(str), st.binary(min_size=28, max_size=80))
"""No seal, or a key id and sealed bytes (a nonce, a ciphertext and its tag)."""


events = st.sampled_from(list(EventType)).flatmap(lambda kind: st.builds(
    Event, conversation_id=name, sequence_number=st.integers(1, 2**53), event_type=st.just(kind),
    agent_name=name, payload=PAYLOADS[kind], event_id=st.uuids().map(str), occurred_at=micros,
    tenant_id=name, correlation_id=st.none() | name, causation_id=st.none() | name,
    subject_id=st.none() | name, key_id=st.none(), sealed=st.none())).flatmap(lambda event: seals.map(
        lambda seal: event if seal is None else replace(event, key_id=seal[0], sealed=seal[1]))).flatmap(
    lambda event: forks.map(lambda fork: event if fork is None or fork[0] == event.conversation_id else replace(
        event, forked_from_conversation=fork[0], forked_from_sequence=fork[1])))
"""Events the rule accepts, as hostile as it allows."""


