"""Analytics' face (``projections.base.store``): ClickHouse, the analysts' tables. What it holds is read
through the SQL box (``queries.run``), which reaches the embedded store's engine from any process."""

from __future__ import annotations

from typing import Any, Callable

from agentlog.deploy.settings import Settings
from agentlog.projections.analytics import queries, verify
from agentlog.projections.analytics.projection import AnalyticsProjection
from agentlog.projections.analytics.rebuild import AnalyticsRebuild
from agentlog.projections.base.digest import Snapshot
from agentlog.projections.base.store import Store


def _sql(settings: Settings) -> Callable[[str], list[list[Any]]]:
    return lambda statement: [list(row.values()) for row in queries.run(settings, statement)]


def snapshot(settings: Settings, topic: str, conversation: str | None) -> Snapshot:
    return verify.snapshot(_sql(settings), settings.clickhouse_database, conversation, page=settings.sql_rows)


def positions(settings: Settings, topic: str) -> dict[int, int]:
    return verify.positions(_sql(settings), settings.clickhouse_database)


def held(settings: Settings, conversations: list[str]) -> tuple[int, int]:
    """Of ``conversations``, those with rows in the fact table, and their rows."""
    ids = ", ".join(verify.literal(c) for c in conversations)
    [[found, rows]] = _sql(settings)(f"SELECT uniqExact(conversation_id), count() FROM "
                                     f"{settings.clickhouse_database}.agent_events WHERE conversation_id IN ({ids})")
    return int(found), int(rows)


def rebuild(settings: Settings, tag: str) -> AnalyticsRebuild:
    return AnalyticsRebuild(settings, tag)


STORE = Store(name="analytics", projection=AnalyticsProjection,
              rebuild=rebuild, snapshot=snapshot, positions=positions, held=held)
