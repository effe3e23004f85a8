"""A conversation's events read back from the log itself: its partition, read to the end."""

from __future__ import annotations

from agentlog.deploy import kafka
from agentlog.deploy.keys import Opener
from agentlog.deploy.partitioner import partition_for
from agentlog.deploy.settings import Settings
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import SchemaError
from agentlog.schemas.events import Event


def events_from_kafka(settings: Settings, conversation_id: str, *, topic: str | None = None) -> list[Event]:
    """Read the conversation's partition to its end and keep its events, opened (text of a forgotten subject
    reads ``[erased]``), in sequence order."""
    topic = topic or settings.events_topic
    partitions = kafka.watermarks(settings, topic)
    key = conversation_id.encode()
    codec = Codec()
    found: list[Event] = []
    for message in kafka.read_to_end(settings, topic, [partition_for(conversation_id, len(partitions))]):
        if message.key() == key:
            try:
                found.append(codec.decode(message.value() or b"", key=key))
            except SchemaError:
                continue  # a poison message is the dead-letter topic's business, not a reader's
    opener = Opener(settings)
    try:
        return sorted(opener.open_all(found), key=lambda e: e.sequence_number)
    finally:
        opener.close()
