"""The fold of a conversation, without services: every event type has its step, the statuses it ends in."""

from __future__ import annotations

from agentlog.projections.fold import _STEPS, ConversationState, fold
from agentlog.schemas.events import CONTROL, SAGA_PREFIX, ConversationStatus, EventType, SagaStatus
from tests.factories import make_conversation, make_saga


def test_every_event_type_has_a_step_in_the_fold() -> None:
    assert {t for t in EventType if not t.value.startswith(SAGA_PREFIX) and t not in CONTROL} == set(_STEPS)


def test_the_fold_of_the_refund_conversation() -> None:
    state = fold("c", make_conversation(tools=3, conversation_id="c"))
    assert (state.status, state.tool_count, state.handoff_count, state.active_agent) == (
        "completed", 3, 1, "refund-agent")
    assert [call["output"] for call in state.tools_called] == [{"ok": True}] * 3


def test_a_saga_s_end_is_the_conversation_s() -> None:
    rolled_back = fold("c", make_saga(fail_at="send_invite", conversation_id="c"))
    assert (rolled_back.status, rolled_back.saga_status) == (ConversationStatus.ROLLED_BACK, SagaStatus.ROLLED_BACK)
    stuck = fold("c", make_saga(fail_at="send_invite", compensation_fails="check_calendar", conversation_id="c"))
    assert (stuck.status, stuck.saga_status) == (ConversationStatus.NEEDS_INTERVENTION,
                                                 SagaStatus.NEEDS_INTERVENTION)
    assert fold("c", make_saga(conversation_id="c")).status == ConversationStatus.ACTIVE


def test_a_stored_state_folds_on_as_the_whole_log_would() -> None:
    events = make_saga(fail_at="send_invite", conversation_id="c")
    whole = fold("c", events)
    resumed = ConversationState.from_dict(fold("c", events[:4]).as_dict())
    for event in events[4:]:
        resumed.apply(event)
    assert resumed.as_dict() == whole.as_dict()
    assert isinstance(resumed.status, ConversationStatus)
