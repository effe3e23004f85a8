"""One fold of a saga's events, read by the orchestrator and by the read models alike; no services."""

from __future__ import annotations

from agentlog.schemas.events import SagaStatus
from agentlog.schemas.saga import SUMMARY_FIELDS, SagaState
from tests.factories import make_saga


def _fold(events: list) -> SagaState:
    state = SagaState("saga-1")
    for event in events:
        state.apply(event)
    return state


def test_a_saga_that_completes() -> None:
    state = _fold(make_saga())
    assert (state.status, state.finished, state.name) == (SagaStatus.COMPLETED, True, "book_demo_meeting")
    assert state.completed == ["check_calendar", "reserve_room", "send_invite"]
    assert state.results["reserve_room"] == {"step": "reserve_room"}
    assert state.args == {"check_calendar": {"n": 0}, "reserve_room": {"n": 1}, "send_invite": {"n": 2}}


def test_a_saga_that_rolls_back_in_reverse() -> None:
    events = make_saga(fail_at="send_invite")
    assert _fold(events[:4]).status == SagaStatus.COMPENSATING and not _fold(events[:4]).finished
    state = _fold(events)
    assert (state.status, state.failed_step, state.error) == (SagaStatus.ROLLED_BACK, "send_invite", "no free slot")
    assert state.compensated == ["reserve_room", "check_calendar"]
    assert state.finished and state.in_doubt is None


def test_a_failed_compensation_needs_a_person_even_after_the_rollback() -> None:
    state = _fold(make_saga(fail_at="send_invite", compensation_fails="check_calendar"))
    assert (state.status, state.compensation_failed, state.finished) == (
        SagaStatus.NEEDS_INTERVENTION, ["check_calendar"], True)


def test_a_step_failed_at_a_crash_is_in_doubt() -> None:
    events = make_saga(fail_at="send_invite")[:4]
    crashed = events[3]
    events[3] = type(crashed)(crashed.conversation_id, crashed.sequence_number, crashed.event_type,
                              crashed.agent_name, {**crashed.payload, "attempts": 0},
                              occurred_at=crashed.occurred_at)
    assert _fold(events).in_doubt == "send_invite"


def test_the_summary_keeps_what_the_read_models_show_and_folds_on() -> None:
    events = make_saga(fail_at="send_invite")
    summary = _fold(events[:5]).summary()
    assert tuple(summary) == SUMMARY_FIELDS and "results" not in summary
    resumed = SagaState.from_summary(summary)
    for event in events[5:]:
        resumed.apply(event)
    assert resumed.summary() == _fold(events).summary()
    assert SagaState.from_summary(_fold(events).summary()).finished
