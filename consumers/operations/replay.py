"""Reading one conversation's events back: from the Postgres archive, or its Kafka partition (the log itself)."""

from __future__ import annotations

import psycopg

from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.producers.history import events_from_kafka
from agentlog.projections.base import StoreUnavailable
from agentlog.projections.reads import connect, events_of
from agentlog.schemas.errors import AgentlogError
from agentlog.schemas.events import Event

__all__ = ["UnknownConversation", "events_from_archive", "events_from_kafka"]


class UnknownConversation(AgentlogError):
    """No event of that conversation is in the log."""


def events_from_archive(settings: Settings, conversation_id: str) -> list[Event]:
    """The archived events, in order; empty when the archive is absent or does not hold the conversation."""
    try:
        with connect(settings, role=PostgresRole.READER) as conn:
            return events_of(conn, conversation_id)
    except (StoreUnavailable, psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        return []  # no archive, or one that no projector of this version has migrated yet: the log has it all
