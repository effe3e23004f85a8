"""A conversation as it was at any step: ``replay --at`` / ``--as-of`` and the API's ``?at=`` fold the events up to
that step with the stores' own fold, so the state equals what a projector held right after exactly those events,
taken here from the dashboard's views while the conversations were appended a step at a time (300 random pairs)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from typing import Any

import pytest

from agentlog.consumers.operations.read_models import BadRequest, ReadModels
from agentlog.consumers.runtime import Projector
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.producers import EventLog
from agentlog.producers.simulate import conversations
from agentlog.projections.dashboard import connect
from agentlog.projections.registry import build
from agentlog.schemas import Event
from tests.conftest import agentlog, env_of

COMPARED = ("status", "active_agent", "tool_count", "handoff_count", "error_count", "guardrail_count", "last_tool",
            "llm_calls", "input_tokens", "output_tokens", "user_message", "final_response", "event_count",
            "last_sequence", "agents", "saga_status", "digest")


def _append(settings: Settings, events: list[Event]) -> None:
    async def go() -> None:
        async with EventLog(settings) as log:
            await log.append_many(events)
    asyncio.run(go())


def _views(settings: Settings, ids: list[str]) -> dict[str, dict[str, Any]]:
    with connect(settings, role=PostgresRole.READER) as conn:
        cur = conn.execute(f"SELECT id, {', '.join(COMPARED)}, cost_usd FROM conversation_views WHERE id = ANY(%s)",
                           (ids,))
        names = [d.name for d in cur.description or []]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def test_the_state_at_a_step_is_what_a_projector_held_after_exactly_those_events(isolated: Settings) -> None:
    runs = list(conversations(36, seed=11))
    ids = [run[0].conversation_id for run in runs]
    held: dict[tuple[str, int], dict[str, Any]] = {}
    stop = threading.Event()
    projector = threading.Thread(target=Projector(build("dashboard", isolated), isolated, batch_wait=0.02).run,
                                 kwargs={"stop": stop}, daemon=True)
    projector.start()
    try:
        for step in range(1, max(len(run) for run in runs) + 1):
            now = [run[step - 1] for run in runs if len(run) >= step]
            _append(isolated, now)
            waiting = {e.conversation_id for e in now}
            deadline = time.monotonic() + 60
            while True:
                views = _views(isolated, sorted(waiting))
                if all(v["last_sequence"] == step for v in views.values()) and len(views) == len(waiting):
                    break
                assert time.monotonic() < deadline, f"the dashboard did not apply step {step} within 60 s"
                time.sleep(0.05)
            for cid, view in views.items():
                held[(cid, step)] = view
    finally:
        stop.set()
        projector.join(60)
    assert len(held) >= 300, len(held)

    models = ReadModels(isolated)
    try:
        for cid, step in random.Random(5).sample(sorted(held), 300):
            state = models.conversation(cid, at=step)["state"]
            view = held[(cid, step)]
            assert {k: state[k] for k in COMPARED} == {k: view[k] for k in COMPARED}, (cid, step)
            assert state["cost_usd"] == pytest.approx(view["cost_usd"], rel=1e-9, abs=1e-12)
        run = runs[0]
        middle = run[len(run) // 2]
        by_time = models.conversation(ids[0], as_of=middle.occurred_at.isoformat())
        assert by_time["state"]["last_sequence"] == middle.sequence_number and by_time["steps"] == len(run)
        for bad in ({"at": len(run) + 1}, {"as_of": "yesterday-ish"}, {"as_of": "1999-01-01T00:00:00Z"},
                    {"at": 1, "as_of": middle.occurred_at.isoformat()}):
            with pytest.raises(BadRequest):
                models.conversation(ids[0], **bad)
        whole = models.conversation(ids[0])
    finally:
        models.close()
    assert whole["steps"] == len(run) and whole["state"]["last_sequence"] == len(run)

    done = agentlog("replay", ids[0], "--at", "2", "--json", env=env_of(isolated))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"]["digest"] == held[(ids[0], 2)]["digest"]
    refused = agentlog("replay", ids[0], "--at", str(len(run) + 5), env=env_of(isolated))
    assert refused.returncode == 1 and f"has steps 1 to {len(run)}" in refused.stderr \
        and "Traceback" not in refused.stderr, refused.stderr
