"""Reading one conversation's events back: from the Postgres archive, or its Kafka partition (the log itself)."""

from __future__ import annotations

import psycopg

from agentlog.deploy import kafka
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.keys import Opener
from agentlog.deploy.partitioner import partition_for
from agentlog.deploy.settings import Settings
from agentlog.projections.base import StoreUnavailable
from agentlog.projections.reads import connect, events_of
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import AgentlogError, SchemaError
from agentlog.schemas.events import Event


class UnknownConversation(AgentlogError):
    """No event of that conversation is in the log."""


def events_from_archive(settings: Settings, conversation_id: str) -> list[Event]:
    """The archived events, in order; empty when the archive is absent or does not hold the conversation."""
    try:
        with connect(settings, role=PostgresRole.READER) as conn:
            return events_of(conn, conversation_id)
    except (StoreUnavailable, psycopg.errors.UndefinedTable):
        return []


def events_from_kafka(settings: Settings, conversation_id: str, *, topic: str | None = None) -> list[Event]:
    """Read the conversation's partition to its end and keep its events, in sequence order."""
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
                continue  # a poison message is the dead-letter topic's business, not replay's
    opener = Opener(settings)
    try:
        return sorted(opener.open_all(found), key=lambda e: e.sequence_number)
    finally:
        opener.close()
