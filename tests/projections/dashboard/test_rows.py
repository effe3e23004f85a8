"""What the dashboard writes for a conversation: one row of conversation_views, column for column; no services."""

from __future__ import annotations

from agentlog.projections.dashboard.projection import VIEW_COLUMNS, view_row
from agentlog.projections.fold import fold
from tests.factories import T0, make_conversation, make_saga


def test_a_view_row_has_a_value_for_each_column() -> None:
    state = fold("c", make_conversation(tools=3, conversation_id="c"))
    row = dict(zip(VIEW_COLUMNS, view_row(state, T0), strict=True))
    assert (row["id"], row["status"], row["tool_count"], row["handoff_count"], row["active_agent"]) == (
        "c", "completed", 3, 1, "refund-agent")
    assert row["duration_ms"] == 8000 and row["event_count"] == row["last_sequence"] == 9
    assert row["updated_at"] == T0


def test_a_view_row_keeps_each_sagas_summary_not_its_results() -> None:
    state = fold("c", make_saga(fail_at="send_invite", conversation_id="c"))
    row = dict(zip(VIEW_COLUMNS, view_row(state, T0), strict=True))
    (saga,) = row["sagas"].obj
    assert (row["saga_status"], saga["status"], saga["compensated"]) == (
        "rolled_back", "rolled_back", ["reserve_room", "check_calendar"])
    assert "results" not in saga and "args" not in saga
