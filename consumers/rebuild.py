"""Rebuilding a read model from the beginning of the log while the old one keeps serving, then swapping.

- dashboard: a new Postgres schema, swapped into ``public`` table by table in one transaction;
- search: a new index, swapped behind the ``conversations`` alias in one request;
- analytics: a new ClickHouse database, swapped in with ``EXCHANGE TABLES``.
A live projector then finds the store's positions behind or ahead of its own and follows them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from confluent_kafka.admin import AdminClient
from psycopg import sql

from agentlog.consumers.runtime import Projector, RunStats
from agentlog.deploy import clients
from agentlog.deploy.errors import StackError
from agentlog.deploy.kafka import retrying
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics import AnalyticsProjection
from agentlog.projections.analytics.schema import TABLES, create
from agentlog.projections.postgres import DashboardProjection, connect
from agentlog.projections.search import SearchProjection
from agentlog.projections.search.index import create_index, delete, index_name, next_version, retire, swap

log = logging.getLogger(__name__)
_RETIRE_GRACE = 2.0
"""Seconds a retired index refuses writes before it is deleted: a batch read from it before the swap
gets a refusal it answers by starting again, rather than an index quietly created anew."""
DASHBOARD_TABLES = ["schema_migrations", "agent_events", "conversation_views", "projection_offsets",
                    "sequence_anomalies"]


@dataclass
class Rebuilt:
    name: str
    events: int
    seconds: float
    replaced: str


def rebuild(settings: Settings, name: str, *, topic: str | None = None,
            analytics: AnalyticsProjection | None = None, stop: threading.Event | None = None,
            watch: Callable[[Projector], None] = lambda projector: None) -> Rebuilt:
    """``watch`` is handed each projector before it runs (a progress bar reads its ``stats``)."""
    started = time.monotonic()
    tag = time.strftime("%Y%m%d%H%M%S")
    group = f"agentlog.{name}.rebuild.{tag}"

    def project(projection) -> RunStats:
        projector = Projector(projection, settings, topic=topic, group_id=group)
        watch(projector)
        return projector.run(stop=stop, until_caught_up=True)

    steps: dict[str, Callable[[], tuple[int, str]]] = {
        "dashboard": lambda: _dashboard(settings, tag, project),
        "search": lambda: _search(settings, project),
        "analytics": lambda: _analytics(settings, tag, project, analytics),
    }
    events, replaced = steps[name]()
    _forget_group(settings, group)
    return Rebuilt(name, events, time.monotonic() - started, replaced)


def _forget_group(settings: Settings, group: str) -> None:
    """The rebuild's consumer group, deleted once it is done: the live projector carries on from the store."""
    admin = AdminClient(settings.kafka_config())
    try:
        retrying(settings, lambda: [f.result(timeout=30) for f in admin.delete_consumer_groups(
            [group], request_timeout=30).values()], what=f"deleting the rebuild's group {group}")
    except StackError as exc:  # the rebuild itself is done: say it, do not undo it
        log.warning("rebuild: could not delete consumer group %s: %s", group, exc)


def _dashboard(settings: Settings, tag: str, project) -> tuple[int, str]:
    schema, retired = f"dashboard_rebuild_{tag}", f"dashboard_retired_{tag}"
    stats = project(DashboardProjection(settings, schema=schema))
    with connect(settings) as conn, conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(retired)))
        live = sql.Identifier(settings.postgres_schema)
        for table in map(sql.Identifier, DASHBOARD_TABLES):
            conn.execute(sql.SQL("ALTER TABLE IF EXISTS {}.{} SET SCHEMA {}").format(live, table,
                                                                                    sql.Identifier(retired)))
            conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(sql.Identifier(schema), table, live))
        conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(schema)))
    with connect(settings) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(retired)))
        conn.commit()
    return stats.events, f"schema {retired}"


def _search(settings: Settings, project) -> tuple[int, str]:
    es = clients.elasticsearch(settings)
    alias = settings.search_alias
    new = index_name(next_version(es, alias), alias)
    create_index(es, new)
    stats = project(SearchProjection(settings, index=new))
    old = swap(es, new, alias)
    if old:  # a live projector still writing to it starts that batch again, on the new index, from its positions
        retire(es, old)
        time.sleep(_RETIRE_GRACE)
        delete(es, old)
    return stats.events, f"index {old}"


def _analytics(settings: Settings, tag: str, project, owned: AnalyticsProjection | None) -> tuple[int, str]:
    database = f"{settings.clickhouse_database}_rebuild_{tag}"
    live = owned or AnalyticsProjection(settings)
    with live.lock:
        create(live.client, live.database)
    stats = project(AnalyticsProjection(settings, database=database, sharing=live))
    with live.lock:
        for table in TABLES:
            live.client.command(f"EXCHANGE TABLES {live.database}.{table} AND {database}.{table}")
        live.client.command(f"INSERT INTO {live.database}.generations SELECT "
                            f"(SELECT max(generation) FROM {live.database}.generations) + 1, now64(3)")
        live.client.command(f"DROP DATABASE {database}")
    if owned is None:
        live.close()
    return stats.events, f"database {database}"
