"""The analytics rebuild: a new ClickHouse database, its tables exchanged with the live ones in place."""

from __future__ import annotations

from agentlog.deploy.settings import Settings
from agentlog.projections.analytics.projection import AnalyticsProjection
from agentlog.projections.analytics.schema import TABLES, create
from agentlog.projections.analytics.verify import snapshot
from agentlog.projections.base.digest import Snapshot
from agentlog.projections.base.rebuild import RebuildTarget


class AnalyticsRebuild(RebuildTarget):
    """``live``: this process's analytics projection when it holds the embedded store (the rebuild shares its
    engine: one process opens a store once)."""

    def __init__(self, settings: Settings, tag: str, *, live: AnalyticsProjection | None = None) -> None:
        self.database = f"{settings.clickhouse_database}_rebuild_{tag}"
        self.owned = live is None
        self.live = live or AnalyticsProjection(settings)
        with self.live.lock:
            create(self.live.client, self.live.database)
        self.projection = AnalyticsProjection(settings, database=self.database, sharing=self.live)

    def swap(self) -> str:
        live = self.live
        try:
            with live.lock:
                for table in TABLES:
                    live.client.command(f"EXCHANGE TABLES {live.database}.{table} AND {self.database}.{table}")
                live.client.command(f"INSERT INTO {live.database}.generations SELECT "
                                    f"(SELECT max(generation) FROM {live.database}.generations) + 1, now64(3)")
                live.client.command(f"DROP DATABASE {self.database}")
        finally:
            if self.owned:
                live.close()
        return f"database {self.database}"

    def snapshot(self, topic: str) -> Snapshot:
        return snapshot(lambda statement: self.live.query(statement).result_rows, self.database, None)

    def discard(self) -> None:
        try:
            with self.live.lock:
                self.live.client.command(f"DROP DATABASE IF EXISTS {self.database}")
        finally:
            if self.owned:
                self.live.close()
