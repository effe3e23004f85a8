"""The contract every projection keeps, written once and run against each real store:
apply a batch; the same batch again changes nothing; the position survives a restart."""

from __future__ import annotations

from abc import ABC, abstractmethod

import psycopg

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics import AnalyticsProjection
from agentlog.projections.base import Batch, Projection, Record
from agentlog.projections.dashboard import DashboardProjection, connect
from agentlog.projections.search import SearchProjection
from tests.conftest import clickhouse_rows
from tests.factories import make_conversation


def batch_of(conversations: list[list], topic: str = "t") -> Batch:
    batch = Batch(topic)
    offsets: dict[int, int] = {}
    for i, events in enumerate(conversations):
        partition = i % 2
        for event in events:
            offset = offsets.get(partition, 0)
            offsets[partition] = offset + 1
            batch.saw(partition, offset)
            batch.records.append(Record(event, topic, partition, offset))
    return batch


class ProjectionContract(ABC):
    @abstractmethod
    def make(self, settings: Settings) -> Projection: ...

    @abstractmethod
    def counts(self, settings: Settings) -> tuple[int, int]:
        """(conversations, events) as the store holds them."""

    def test_apply_then_again_changes_nothing_and_positions_survive(self, isolated: Settings) -> None:
        conversations = [make_conversation(tools=t) for t in (1, 2, 3, 4)]
        events = sum(len(c) for c in conversations)
        batch = batch_of(conversations, isolated.events_topic)
        projection = self.make(isolated)
        projection.setup()
        try:
            projection.apply(batch)
            assert self.counts(isolated) == (4, events)
            projection.apply(batch)
            assert self.counts(isolated) == (4, events)
        finally:
            projection.close()
        restarted = self.make(isolated)
        try:
            positions = restarted.positions(isolated.events_topic, [0, 1, 2])
            assert positions == {0: batch.ends[0], 1: batch.ends[1], 2: -2}
            restarted.apply(batch)
            assert self.counts(isolated) == (4, events)
        finally:
            restarted.close()


class TestDashboard(ProjectionContract):
    def make(self, settings):
        return DashboardProjection(settings)

    def counts(self, settings):
        with connect(settings, role=PostgresRole.OWNER) as conn:
            views = conn.execute("SELECT count(*), coalesce(sum(event_count), 0) FROM conversation_views").fetchone()
            archived = conn.execute("SELECT count(*) FROM agent_events").fetchone()[0]
        assert views[1] == archived
        return views[0], archived


class TestSearch(ProjectionContract):
    def make(self, settings):
        return SearchProjection(settings)

    def counts(self, settings):
        es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
        es.indices.refresh(index=settings.search_alias)
        docs = es.search(index=settings.search_alias, size=100, query={"match_all": {}})["hits"]["hits"]
        return len(docs), sum(d["_source"]["event_count"] for d in docs)


class TestAnalytics(ProjectionContract):
    def make(self, settings):
        return AnalyticsProjection(settings)

    def counts(self, settings):
        [(conversations, events, unique)] = clickhouse_rows(
            settings, f"SELECT uniqExact(conversation_id), count(), uniqExact(event_id) "
                      f"FROM {settings.clickhouse_database}.agent_events")
        assert events == unique
        return conversations, events


def test_a_gap_and_a_duplicate_within_a_conversation_are_reported(isolated: Settings) -> None:
    events = make_conversation(tools=2)
    batch = batch_of([events[:2] + events[3:] + [events[3]]], isolated.events_topic)
    projection = DashboardProjection(isolated)
    projection.setup()
    projection.apply(batch)
    projection.close()
    with connect(isolated, role=PostgresRole.OWNER) as conn:
        found = conn.execute("SELECT kind, expected, got FROM sequence_anomalies ORDER BY kind").fetchall()
    assert found == [("duplicate", len(events) + 1, 4), ("gap", 3, 4)]


def test_migrations_are_versioned_and_applied_once(isolated: Settings) -> None:
    from agentlog.projections.dashboard.migrate import migrate

    with psycopg.connect(isolated.postgres_dsn_for(PostgresRole.OWNER)) as conn:
        first = migrate(conn, isolated.postgres_schema)
        second = migrate(conn, isolated.postgres_schema)
    assert first == ["0001_dashboard", "0002_event_id_not_unique", "0003_digest"] and second == []


def test_analytics_setup_repairs_an_aggregate_hour_left_half_written(isolated: Settings) -> None:
    batch = batch_of([make_conversation(tools=3) for _ in range(3)], isolated.events_topic)
    projection = AnalyticsProjection(isolated)
    projection.setup()
    projection.apply(batch)
    db = isolated.clickhouse_database
    projection.query(f"ALTER TABLE {db}.tool_usage_hourly DELETE WHERE 1 SETTINGS mutations_sync = 2")
    projection.close()
    assert clickhouse_rows(isolated, f"SELECT count() FROM {db}.tool_usage_hourly") == [(0,)]
    restarted = AnalyticsProjection(isolated)
    restarted.setup()
    restarted.close()
    assert clickhouse_rows(isolated, f"SELECT sum(calls), sum(results) FROM {db}.tool_usage_hourly") == [(9, 9)]
