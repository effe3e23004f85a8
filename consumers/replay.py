"""Reading one conversation's events back: from the Postgres archive, or its Kafka partition (the log itself)."""

from __future__ import annotations

import time
import uuid

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agentlog.deploy.kafka import partitions_of, retrying
from agentlog.deploy.partitioner import partition_for
from agentlog.deploy.settings import Settings
from agentlog.projections.base import StoreUnavailable
from agentlog.projections.postgres import connect
from agentlog.projections.postgres.queries import events_of
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import AgentlogError, SchemaError
from agentlog.schemas.events import Event


class UnknownConversation(AgentlogError):
    """No event of that conversation is in the log."""


def events_from_archive(settings: Settings, conversation_id: str) -> list[Event]:
    """The archived events, in order; empty when the archive is absent or does not hold the conversation."""
    try:
        with connect(settings) as conn:
            return events_of(conn, conversation_id)
    except (StoreUnavailable, psycopg.errors.UndefinedTable):
        return []


def events_from_kafka(settings: Settings, conversation_id: str, *, topic: str | None = None) -> list[Event]:
    """Scan the conversation's partition from the beginning and keep its events, in sequence order."""
    topic = topic or settings.events_topic
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"agentlog-replay-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "enable.partition.eof": True}))
    try:
        partitions = len(retrying(settings, lambda: partitions_of(consumer, topic), what=f"listing {topic}"))
        partition = partition_for(conversation_id, partitions)
        low, high = retrying(settings, lambda: consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                                              timeout=10), what=f"offsets of {topic}")
        if high <= low:
            return []
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        key = conversation_id.encode()
        codec = Codec()
        found: list[Event] = []
        position = low
        deadline = time.monotonic() + 120
        while position < high - 1:
            if time.monotonic() > deadline:
                raise AgentlogError(f"reading partition {partition} of {topic} stalled at offset {position} of {high}")
            for message in consumer.consume(1000, timeout=1.0):
                if message.error():
                    continue
                position = message.offset()
                if message.key() == key:
                    try:
                        found.append(codec.decode(message.value(), key=key))
                    except SchemaError:
                        continue  # a poison message is the dead-letter topic's business, not replay's
        return sorted(found, key=lambda e: e.sequence_number)
    finally:
        consumer.close()
