"""Sagas on the real broker: completion, rollback, failing compensations, crashes of the orchestrator."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from agentlog.consumers.operations.replay import events_from_kafka
from agentlog.deploy.settings import Settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.examples.sagas import book_demo_meeting, refund_flow
from agentlog.producers.examples.services import Services
from agentlog.producers.saga import Leases, Orchestrator, Retry, Saga, SagaBusy, SagaDefinitionError
from agentlog.projections.fold import fold
from agentlog.schemas.saga import SagaState
from tests.conftest import ROOT, agentlog, env_of
from tests.producers.saga import saga_worker


async def _run(settings: Settings, saga: Saga, orchestrator: Orchestrator | None = None):
    async with EventLog(settings, topic=settings.events_topic) as log:
        conversation = Conversation(log, agent="sales-agent")
        await conversation.started("We'd like a demo next week")
        outcome = await (orchestrator or Orchestrator()).run(saga, conversation)
        return outcome, conversation.conversation_id


def _story(settings: Settings, cid: str) -> list[tuple[str, str]]:
    events = events_from_kafka(settings, cid, topic=settings.events_topic)
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    return [(e.event_type.value, e.payload.get("step", "")) for e in events if e.event_type.value.startswith("saga_")]


def test_the_happy_path_completes_every_step_in_order(isolated: Settings) -> None:
    services = Services(free_slots=1)
    outcome, cid = asyncio.run(_run(isolated, book_demo_meeting(services)))
    assert outcome.status == "completed"
    assert _story(isolated, cid) == [("saga_started", ""), ("saga_step_completed", "qualify_lead"),
                                     ("saga_step_completed", "create_opportunity"),
                                     ("saga_step_completed", "book_demo_slot"), ("saga_completed", "")]
    assert services.leads == {"lead-456": "qualified"} and len(services.bookings) == 1


def test_a_failure_at_step_3_compensates_step_2_then_step_1_with_their_args_and_results(isolated: Settings) -> None:
    services = Services(free_slots=0)
    outcome, cid = asyncio.run(_run(isolated, book_demo_meeting(services)))
    assert (outcome.status, outcome.failed_step) == ("rolled_back", "book_demo_slot")
    assert "NoSlotsAvailable" in outcome.error
    assert _story(isolated, cid) == [("saga_started", ""), ("saga_step_completed", "qualify_lead"),
                                     ("saga_step_completed", "create_opportunity"),
                                     ("saga_step_failed", "book_demo_slot"),
                                     ("saga_step_compensated", "create_opportunity"),
                                     ("saga_step_compensated", "qualify_lead"), ("saga_rolled_back", "")]
    operations = [op for op, _ in services.calls]
    assert operations == ["qualify_lead", "create_opportunity", "book_calendar_slot", "book_calendar_slot",
                          "book_calendar_slot", "delete_opportunity", "mark_lead_unqualified"]
    assert "cancel_calendar_slot" not in operations  # the failed step had no effect to undo
    assert services.opportunities == {} and services.leads == {"lead-456": "unqualified"}
    state = fold(cid, events_from_kafka(isolated, cid, topic=isolated.events_topic))
    assert (state.status, state.saga_status) == ("rolled_back", "rolled_back")


def test_a_compensation_that_keeps_failing_is_recorded_and_the_others_still_run(isolated: Settings) -> None:
    services = Services(free_slots=0)
    attempts = []

    async def refuse(lead_id, deal_value, *, result, idempotency_key):
        attempts.append(idempotency_key)
        raise ConnectionError("CRM is down")

    saga = book_demo_meeting(services)
    step = saga.steps[1]
    saga.steps[1] = type(step)(step.name, step.action, refuse, step.args, Retry(attempts=3, backoff=0.01))
    outcome, cid = asyncio.run(_run(isolated, saga))
    assert outcome.status == "needs_intervention"
    assert len(attempts) == 3 and len(set(attempts)) == 1
    story = _story(isolated, cid)
    assert story[-3:] == [("saga_compensation_failed", "create_opportunity"),
                          ("saga_step_compensated", "qualify_lead"), ("saga_rolled_back", "")]
    assert services.leads == {"lead-456": "unqualified"}
    replayed = agentlog("replay", cid, env=env_of(isolated))
    assert "FAILED — needs manual intervention" in replayed.stdout
    assert "Result: Rollback incomplete: needs manual intervention" in replayed.stdout


def test_replay_of_a_rolled_back_saga_reads_like_the_seed_diagram(isolated: Settings) -> None:
    _, cid = asyncio.run(_run(isolated, book_demo_meeting(Services(free_slots=0))))
    text = agentlog("replay", cid, env=env_of(isolated)).stdout
    diagram = text[text.index("Saga: book_demo_meeting"):]
    lines = [line for line in diagram.splitlines() if line.startswith(("Step", "←", "Result", "v ("))]
    assert lines == ["Step 1: qualify_lead", "v (success)", "Step 2: create_opportunity", "v (success)",
                     "Step 3: book_demo_slot",
                     "v (FAILURE - NoSlotsAvailable: no available slots for rep-7 at 2026-12-03T15:00:00Z)",
                     "← Compensate Step 2: create_opportunity", "← Compensate Step 1: qualify_lead",
                     "Result: All changes rolled back cleanly"]


def test_a_step_without_compensation_is_allowed_when_declared(isolated: Settings) -> None:
    outcome, _ = asyncio.run(_run(isolated, refund_flow(Services())))
    assert outcome.status == "completed"
    assert outcome.results["issue_refund"]["status"] == "processed"


async def _noop(**_):
    return None


@pytest.mark.parametrize("define, message", [
    (lambda s: s.add_step("a", _noop, _noop).add_step("a", _noop, _noop), "already defined"),
    (lambda s: s.add_step("a", _noop, None), "no compensation"),
    (lambda s: s.add_step("a", "qualify", _noop), "must be callable"),
    (lambda s: s.add_step("a", _noop, 42), "compensation must be callable"),
    (lambda s: s.add_step("a", _noop, _noop, on_crash="ignore"), "on_crash"),
])
def test_bad_definitions_are_refused_before_anything_runs(define, message) -> None:
    with pytest.raises(SagaDefinitionError, match=message):
        define(Saga("s"))


def test_two_orchestrators_never_drive_the_same_saga(isolated: Settings) -> None:
    first, second = Leases(isolated, owner="a", ttl=30), Leases(isolated, owner="b", ttl=30)
    assert first.acquire("saga-x")
    try:
        progress = SagaState("saga-x", "book_demo_meeting")
        with pytest.raises(SagaBusy):
            asyncio.run(Orchestrator(leases=second).resume(book_demo_meeting(Services()), None, progress))
        assert first.acquire("saga-x")  # its owner renews
    finally:
        first.release("saga-x")
    assert second.acquire("saga-x")
    second.release("saga-x")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["after-step-2", "in-step-3", "in-step-3-compensate"])
def test_a_killed_orchestrator_is_finished_by_a_new_one(isolated: Settings, tmp_path, mode: str) -> None:
    marker = tmp_path / "marker"
    worker = subprocess.Popen([sys.executable, "-m", "tests.producers.saga.saga_worker", mode, str(marker)],
                              env={**os.environ, **env_of(isolated)}, cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert worker.poll() is None, worker.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()

    services = saga_worker.RecordedServices(isolated)
    recovering = Orchestrator(leases=Leases(isolated, owner="recovery", ttl=2))
    saga = saga_worker.definition(services, mode)

    async def recover():
        async with EventLog(isolated, topic=isolated.events_topic) as log:
            for _ in range(40):  # the dead worker's lease runs out after its ttl
                outcomes = await recovering.recover(log, [saga])
                if outcomes:
                    return outcomes
                await asyncio.sleep(0.25)

    [outcome] = asyncio.run(recover())
    calls = saga_worker.calls(isolated)
    operations = [op for op, _ in calls]
    assert operations.count("qualify_lead") == 1 and operations.count("create_opportunity") == 1
    story = _story(isolated, saga_worker.CONVERSATION)
    if mode == "in-step-3-compensate":
        assert outcome.status == "rolled_back"
        assert story[3:] == [("saga_step_failed", "book_demo_slot"), ("saga_step_compensated", "book_demo_slot"),
                             ("saga_step_compensated", "create_opportunity"),
                             ("saga_step_compensated", "qualify_lead"), ("saga_rolled_back", "")]
    else:
        assert outcome.status == "completed"
        assert story == [("saga_started", ""), ("saga_step_completed", "qualify_lead"),
                         ("saga_step_completed", "create_opportunity"), ("saga_step_completed", "book_demo_slot"),
                         ("saga_completed", "")]
        bookings = [key for op, key in calls if op == "book_calendar_slot"]
        assert len(bookings) == (2 if mode == "in-step-3" else 1) and len(set(bookings)) == 1
