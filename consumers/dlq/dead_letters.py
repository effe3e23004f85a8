"""The dead-letter topic: what could not be decoded or applied, with the original bytes and why."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from confluent_kafka import Message, Producer

from agentlog.deploy.settings import Settings
from agentlog.schemas.errors import AgentlogError

log = logging.getLogger(__name__)

REASON = "agentlog.dlq.reason"
ERROR = "agentlog.dlq.error"
SOURCE_TOPIC = "agentlog.dlq.source.topic"
SOURCE_PARTITION = "agentlog.dlq.source.partition"
SOURCE_OFFSET = "agentlog.dlq.source.offset"
PROJECTION = "agentlog.dlq.projection"
FAILED_AT = "agentlog.dlq.failed_at"
ID = "agentlog.dlq.id"
"""projection/topic/partition/offset: the same for a dead letter sent again after a crash, so readers dedupe."""


class DeadLetters:
    """``send`` buffers a dead letter; ``flush`` returns once the broker has them all (before the store's
    position moves past them)."""

    def __init__(self, settings: Settings, *, projection: str, topic: str | None = None) -> None:
        self.topic = topic or settings.dlq_topic
        self.projection = projection
        self._producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all",
                                                           "linger.ms": 5}))
        self._failed: list[str] = []
        self.sent = 0

    def send(self, message: Message, reason: str, error: BaseException | str) -> None:
        headers = list(message.headers() or [])
        headers += [
            (REASON, reason.encode()),
            (ERROR, str(error)[:2000].encode()),
            (SOURCE_TOPIC, message.topic().encode()),
            (SOURCE_PARTITION, str(message.partition()).encode()),
            (SOURCE_OFFSET, str(message.offset()).encode()),
            (PROJECTION, self.projection.encode()),
            (FAILED_AT, datetime.now(UTC).isoformat().encode()),
            (ID, f"{self.projection}/{message.topic()}/{message.partition()}/{message.offset()}".encode()),
        ]
        log.warning("dead letter from %s[%d]@%d: %s: %s", message.topic(), message.partition(), message.offset(),
                    reason, error)
        self._producer.produce(self.topic, key=message.key(), value=message.value(), headers=headers,
                               on_delivery=self._delivered)
        self.sent += 1

    def flush(self, timeout: float = 30) -> None:
        if self._producer.flush(timeout) or self._failed:
            failed, self._failed = self._failed, []
            raise AgentlogError(f"dead letters not acknowledged by the broker: {failed or 'timed out'}")

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self._failed.append(err.str())
