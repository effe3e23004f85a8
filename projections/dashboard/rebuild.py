"""The dashboard's rebuild: a new Postgres schema, its tables moved into the live schema in one transaction."""

from __future__ import annotations

from psycopg import sql

from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.projections.base.digest import Snapshot
from agentlog.projections.base.rebuild import RebuildTarget
from agentlog.projections.dashboard.migrate import DATA_TABLES
from agentlog.projections.dashboard.projection import DashboardProjection, connect
from agentlog.projections.dashboard.verify import snapshot

TABLES = ["schema_migrations", *DATA_TABLES]
"""Every table of the dashboard's schema: what a swap moves."""


class DashboardRebuild(RebuildTarget):
    def __init__(self, settings: Settings, tag: str) -> None:
        self.settings = settings
        self.schema, self.retired = f"dashboard_rebuild_{tag}", f"dashboard_retired_{tag}"
        self.projection = DashboardProjection(settings, schema=self.schema)

    def swap(self) -> str:
        with connect(self.settings, role=PostgresRole.OWNER) as conn, conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.retired)))
            live = sql.Identifier(self.settings.postgres_schema)
            for table in map(sql.Identifier, TABLES):
                conn.execute(sql.SQL("ALTER TABLE IF EXISTS {}.{} SET SCHEMA {}").format(
                    live, table, sql.Identifier(self.retired)))
                conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(sql.Identifier(self.schema), table,
                                                                               live))
            conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(self.schema)))
        with connect(self.settings, role=PostgresRole.OWNER) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.retired)))
            conn.commit()
        return f"schema {self.retired}"

    def snapshot(self, topic: str) -> Snapshot:
        return snapshot(self.settings, topic, None, schema=self.schema)

    def discard(self) -> None:
        self.projection.close()
        with connect(self.settings, role=PostgresRole.OWNER) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
            conn.commit()
