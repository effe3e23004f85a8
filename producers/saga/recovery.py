"""Finding the sagas that started and did not finish — in the log itself.

The log, not a read model, is read: a projection may lag behind, and recovering from a stale
state could run a completed step again. Every partition is read from its beginning up to its
end at the time of the call (a checkpoint of the oldest unfinished saga is the obvious next
step when logs grow long).
"""

from __future__ import annotations

from dataclasses import dataclass

from agentlog.deploy import kafka
from agentlog.deploy.keys import Opener
from agentlog.deploy.settings import Settings
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


def unfinished(settings: Settings, topic: str | None = None) -> list[Unfinished]:
    topic = topic or settings.events_topic
    codec = Codec()
    opener = Opener(settings)  # a saga's arguments and results are sealed in the log
    sagas: dict[str, SagaState] = {}
    conversation_of: dict[str, str] = {}
    last_sequence: dict[str, int] = {}
    subject_of: dict[str, str] = {}
    for message in kafka.read_to_end(settings, topic, stall=300):
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
            conversation_of[saga_id] = cid
    opener.close()
    return [Unfinished(progress, cid, last_sequence[cid] + 1, subject_of.get(cid))
            for saga_id, progress in sagas.items() if not progress.finished
            for cid in (conversation_of[saga_id],)]
