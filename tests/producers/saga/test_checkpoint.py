"""Saga recovery from a checkpoint: it reads the log from where every saga below has finished, finds the
open ones as a full read does, and moves the checkpoint on as sagas finish (against the real broker)."""

from __future__ import annotations

import asyncio
import json
import uuid

from agentlog.deploy.settings import Settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.saga.checkpoint import Checkpoints
from agentlog.producers.saga.recovery import unfinished
from agentlog.schemas import EventType
from tests.consumers.test_end_to_end import fill


async def _saga(settings: Settings, subject: str, *, finish: bool) -> tuple[str, str]:
    """A saga that starts (and finishes, or not) in a conversation of its own."""
    saga_id = f"saga-{uuid.uuid4().hex[:12]}"
    async with EventLog(settings) as log:
        conv = Conversation(log, agent="saga-orchestrator", subject_id=subject)
        await conv.started("book a demo")
        await conv.record(EventType.SAGA_STARTED, {"saga_id": saga_id, "saga_name": "book", "steps": ["a"],
                                                   "args_json": json.dumps({"a": {}})})
        if finish:
            await conv.record(EventType.SAGA_COMPLETED, {"saga_id": saga_id})
    return saga_id, conv.conversation_id


def test_recovery_reads_from_its_checkpoint_and_finds_what_a_full_read_finds(isolated: Settings) -> None:
    fill(isolated, 60, seed=5)
    asyncio.run(_saga(isolated, "user-done", finish=True))
    still, conversation = asyncio.run(_saga(isolated, "user-open", finish=False))
    fill(isolated, 60, seed=6)
    checkpoints = Checkpoints(isolated)
    assert checkpoints.read(isolated.events_topic) == {}
    full = unfinished(isolated)
    first = unfinished(isolated, checkpoints=checkpoints)
    assert [(f.progress.saga_id, f.conversation_id, f.next_sequence, f.subject_id) for f in first] == \
        [(f.progress.saga_id, f.conversation_id, f.next_sequence, f.subject_id) for f in full] == \
        [(still, conversation, 3, "user-open")]
    saved = checkpoints.read(isolated.events_topic)
    assert saved and min(saved.values()) > 0  # past the sagas that finished and the traffic before them

    fill(isolated, 60, seed=7)
    again = unfinished(isolated, checkpoints=checkpoints)
    assert [f.progress.saga_id for f in again] == [still]
    after = checkpoints.read(isolated.events_topic)
    assert all(after[p] >= offset for p, offset in saved.items())  # only forward; held at the open saga's start

    async def finish() -> None:
        async with EventLog(isolated) as log:
            conv = Conversation(log, agent="saga-orchestrator", conversation_id=conversation, next_sequence=3,
                                subject_id="user-open")
            await conv.record(EventType.SAGA_COMPLETED, {"saga_id": still})
    asyncio.run(finish())
    assert unfinished(isolated, checkpoints=checkpoints) == []
    moved = checkpoints.read(isolated.events_topic)
    assert all(moved[p] >= after[p] for p in after) and moved != after  # the finished saga no longer holds it
