"""Finding the sagas that started and did not finish — in the log itself.

The log, not a read model, is read: a projection may lag behind, and recovering from a stale
state could run a completed step again. Every partition is read from its beginning up to its
end at the time of the call (a checkpoint of the oldest unfinished saga is the obvious next
step when logs grow long).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agentlog.deploy.kafka import retrying
from agentlog.deploy.settings import Settings
from agentlog.producers.saga.errors import SagaError
from agentlog.producers.saga.progress import Progress
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import SchemaError
from agentlog.schemas.events import SAGA_PREFIX


@dataclass
class Unfinished:
    progress: Progress
    conversation_id: str
    next_sequence: int


def unfinished(settings: Settings, topic: str | None = None) -> list[Unfinished]:
    topic = topic or settings.events_topic
    consumer = Consumer(settings.kafka_config(**{"group.id": f"agentlog-saga-recovery-{uuid.uuid4().hex}",
                                                 "enable.auto.commit": False}))
    codec = Codec()
    sagas: dict[str, Progress] = {}
    conversation_of: dict[str, str] = {}
    last_sequence: dict[str, int] = {}
    try:
        partitions = retrying(settings, lambda: consumer.list_topics(topic, timeout=10).topics[topic].partitions,
                              what=f"listing {topic}")
        ends = {}
        for p in partitions:
            low, high = retrying(settings, lambda p=p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                                                      timeout=10), what=f"offsets of {topic}")
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + 300
        while ends:
            if time.monotonic() > deadline:
                raise SagaError(f"reading {topic} for unfinished sagas stalled; is Kafka up?")
            for message in consumer.consume(1000, timeout=1.0):
                if message.error():
                    continue
                if message.offset() >= ends.get(message.partition(), 0) - 1:
                    ends.pop(message.partition(), None)
                try:
                    event = codec.decode(message.value())
                except SchemaError:
                    continue
                cid = event.conversation_id
                last_sequence[cid] = max(last_sequence.get(cid, 0), event.sequence_number)
                if event.event_type.value.startswith(SAGA_PREFIX):
                    saga_id = event.payload["saga_id"]
                    sagas.setdefault(saga_id, Progress(saga_id)).apply(event)
                    conversation_of[saga_id] = cid
    finally:
        consumer.close()
    return [Unfinished(progress, conversation_of[saga_id], last_sequence[conversation_of[saga_id]] + 1)
            for saga_id, progress in sagas.items() if not progress.finished]
