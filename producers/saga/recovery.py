"""Finding the sagas that started and did not finish — in the log itself.

The log, not a read model, is read: a projection may lag behind, and recovering from a stale
state could run a completed step again. Every partition is read up to its end at the time of the
call, from a checkpoint (``saga.checkpoint``: below it every saga that started has finished) when the
orchestrator has one, so a long log is not read again from its beginning at every recovery.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentlog.deploy import kafka
from agentlog.deploy.keys import Opener
from agentlog.deploy.settings import Settings
from agentlog.producers.saga.checkpoint import Checkpoints
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import SchemaError
from agentlog.schemas.events import SAGA_PREFIX
from agentlog.schemas.saga import SagaState


@dataclass
class Unfinished:
    progress: SagaState
    conversation_id: str
    next_sequence: int
    subject_id: str | None = None
    """The conversation's subject, as its events named it: the steps the recovery records carry it too."""


def unfinished(settings: Settings, topic: str | None = None, *,
               checkpoints: Checkpoints | None = None) -> list[Unfinished]:
    """The sagas that started and did not finish, read from the log: from ``checkpoints`` when given (and
    moved on afterwards: the start of the oldest saga left open, per partition, or the end read), else from
    the beginning."""
    topic = topic or settings.events_topic
    codec = Codec()
    opener = Opener(settings)  # a saga's arguments and results are sealed in the log
    sagas: dict[str, SagaState] = {}
    started_at: dict[str, tuple[int, int]] = {}
    conversation_of: dict[str, str] = {}
    last_sequence: dict[str, int] = {}
    subject_of: dict[str, str] = {}
    ends: dict[int, int] = {}
    start = checkpoints.read(topic) if checkpoints is not None else None
    for message in kafka.read_to_end(settings, topic, stall=300, start=start):
        partition, offset = message.partition() or 0, message.offset() or 0
        ends[partition] = offset + 1
        try:
            event = codec.decode(message.value() or b"")
        except SchemaError:
            continue
        cid = event.conversation_id
        last_sequence[cid] = max(last_sequence.get(cid, 0), event.sequence_number)
        if event.subject_id is not None:
            subject_of.setdefault(cid, event.subject_id)
        if event.event_type.value.startswith(SAGA_PREFIX):
            [event] = opener.open_all([event])
            saga_id = event.payload["saga_id"]
            sagas.setdefault(saga_id, SagaState(saga_id)).apply(event)
            started_at.setdefault(saga_id, (partition, offset))
            conversation_of[saga_id] = cid
    opener.close()
    open_sagas = [saga_id for saga_id, progress in sagas.items() if not progress.finished]
    if checkpoints is not None:
        moved = dict(ends)
        for saga_id in open_sagas:
            partition, offset = started_at[saga_id]
            moved[partition] = min(moved.get(partition, offset), offset)
        checkpoints.save(topic, moved)
    return [Unfinished(sagas[saga_id], cid, last_sequence[cid] + 1, subject_of.get(cid))
            for saga_id in open_sagas for cid in (conversation_of[saga_id],)]
