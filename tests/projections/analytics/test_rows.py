"""What analytics writes for an event: one row of the fact table, column for column; no services."""

from __future__ import annotations

from agentlog.projections.analytics.projection import fact_row
from agentlog.projections.analytics.schema import FACT_COLUMNS
from tests.factories import make_conversation, make_saga


def test_a_tool_result_fills_the_tool_columns_and_nothing_else() -> None:
    events = make_conversation(tools=1, handoff=False)
    row = dict(zip(FACT_COLUMNS, fact_row(events[2], 3, 41), strict=True))
    assert (row["event_type"], row["tool_name"], row["tool_status"], row["duration_ms"]) == (
        "tool_result", "tool_0", "ok", 12.5)
    assert (row["kafka_partition"], row["kafka_offset"], row["sequence_number"]) == (3, 41, 3)
    assert (row["model"], row["guardrail_action"], row["saga_id"]) == ("", "", "")


def test_a_tool_call_has_no_status_and_a_saga_step_names_its_saga() -> None:
    call = dict(zip(FACT_COLUMNS, fact_row(make_conversation(tools=1, handoff=False)[1], 0, 0), strict=True))
    assert (call["tool_name"], call["tool_status"], call["duration_ms"]) == ("tool_0", "", None)
    step = dict(zip(FACT_COLUMNS, fact_row(make_saga()[1], 0, 1), strict=True))
    assert (step["saga_id"], step["saga_step"], step["tool_name"]) == ("saga-1", "check_calendar", "")
