"""The contract every store keeps, written once and run against each real store and the in-memory one
(which ``make check`` runs with no service): apply a batch; the same batch again changes nothing; the
position survives a restart; a batch past the store's position asks to be rewound; and its ``Store`` face
reports what it applied (positions, each conversation's digest, what it holds)."""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, Callable

import psycopg
import pytest

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.settings import Settings
from agentlog.deploy.settings import settings as process_settings
from agentlog.projections import analytics, dashboard, memory, search
from agentlog.projections.analytics import AnalyticsProjection
from agentlog.projections.base import Batch, Projection, Record, Rewind
from agentlog.projections.base.digest import Held, Snapshot, of
from agentlog.projections.base.store import Store
from agentlog.projections.dashboard import DashboardProjection, connect
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


def held_of(events: list) -> Held:
    """What a store holds of a conversation it applied these events of, as ``verify`` folds the log."""
    return Held(of([(e.sequence_number, e.event_id) for e in events]), len(events), events[-1].sequence_number)


def seen(snapshot: Snapshot, ids: list[str]) -> dict[str, tuple[str, int, int]]:
    """What a snapshot holds, read again where it says its first read may lag (as ``verify`` reads it)."""
    held = dict(snapshot.conversations)
    if snapshot.recheck is not None:  # it also lets go of the snapshot's client
        held |= snapshot.recheck([cid for cid in ids if cid not in held])
    return {cid: each.key() for cid, each in held.items()}


def positions_of(snapshot: Snapshot) -> dict[int, int]:
    seen(snapshot, [])
    return snapshot.positions


def settled(read: Callable[[], Any], want: Any, seconds: float = 10) -> Any:
    """What ``read`` gives once it gives ``want``, or after ``seconds``: a store whose reads lag its writes
    (search, until its next refresh) says so in its snapshot (``ahead``); the others answer at once."""
    deadline = time.monotonic() + seconds
    while (got := read()) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


class ProjectionContract(ABC):
    store: Store
    one_record_per_conversation = False
    """What ``held`` counts as records: the events (rows, archived events), or one document per conversation."""

    def make(self, settings: Settings) -> Projection:
        return self.store.projection(settings)

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


    def test_a_batch_past_the_stores_position_asks_to_be_rewound(self, isolated: Settings) -> None:
        conversations = [make_conversation(tools=1), make_conversation(tools=2)]
        batch = batch_of(conversations, isolated.events_topic)
        projection = self.make(isolated)
        projection.setup()
        try:
            projection.apply(batch)
            later = make_conversation(tools=1)
            gap = Batch(isolated.events_topic)
            for number, event in enumerate(later):
                offset = batch.ends[0] + 5 + number
                gap.saw(0, offset)
                gap.records.append(Record(event, isolated.events_topic, 0, offset))
            with pytest.raises(Rewind) as rewound:
                projection.apply(gap)
            assert rewound.value.positions == {0: batch.ends[0]}
        finally:
            projection.close()
        assert self.counts(isolated) == (2, sum(len(events) for events in conversations))  # nothing of the gap

    def test_its_face_reports_what_it_applied(self, isolated: Settings) -> None:
        conversations = [make_conversation(tools=t) for t in (1, 3)]
        batch = batch_of(conversations, isolated.events_topic)
        projection = self.make(isolated)
        projection.setup()
        try:
            projection.apply(batch)
        finally:
            projection.close()
        topic = isolated.events_topic
        expected = {events[0].conversation_id: held_of(events).key() for events in conversations}
        snapshot = self.store.snapshot(isolated, topic, None)
        assert seen(snapshot, list(expected)) == expected
        assert snapshot.problems == []
        if not snapshot.ahead:
            assert snapshot.positions == batch.ends
        assert settled(lambda: positions_of(self.store.snapshot(isolated, topic, None)), batch.ends) == batch.ends
        assert settled(lambda: self.store.positions(isolated, topic), batch.ends) == batch.ends
        first = conversations[0][0].conversation_id
        assert seen(self.store.snapshot(isolated, topic, first), [first]) == {first: expected[first]}
        records = 2 if self.one_record_per_conversation else sum(len(each) for each in conversations)
        asked = [*expected, "no-such-conversation"]
        assert settled(lambda: self.store.held(isolated, asked), (2, records)) == (2, records)


class TestMemory(ProjectionContract):
    """The in-memory store: the contract with no service (``make check`` runs it)."""

    store = memory.STORE

    @pytest.fixture
    def isolated(self) -> Settings:
        unique = uuid.uuid4().hex[:12]
        return replace(process_settings(), postgres_schema=f"memory_{unique}", events_topic=f"test.{unique}")

    def test_a_rebuild_fills_beside_the_live_version_then_swaps_in_or_is_discarded(self, isolated) -> None:
        topic = isolated.events_topic
        old, new = make_conversation(tools=1), make_conversation(tools=2)
        live = self.make(isolated)
        live.apply(batch_of([old], topic))
        target = self.store.rebuild(isolated, "one")
        target.projection.apply(batch_of([new], topic))
        assert set(self.store.snapshot(isolated, topic, None).conversations) == {old[0].conversation_id}
        assert set(target.snapshot(topic).conversations) == {new[0].conversation_id}
        discarded = self.store.rebuild(isolated, "two")
        discarded.projection.apply(batch_of([old, new], topic))
        discarded.discard()
        assert target.swap() == isolated.postgres_schema
        assert set(self.store.snapshot(isolated, topic, None).conversations) == {new[0].conversation_id}

    def counts(self, settings):
        conversations = memory.world(settings).conversations
        return len(conversations), sum(held.events for held in conversations.values())


class TestDashboard(ProjectionContract):
    store = dashboard.STORE

    def counts(self, settings):
        with connect(settings, role=PostgresRole.OWNER) as conn:
            views = conn.execute("SELECT count(*), coalesce(sum(event_count), 0) FROM conversation_views").fetchone()
            archived = conn.execute("SELECT count(*) FROM agent_events").fetchone()[0]
        assert views[1] == archived
        return views[0], archived


class TestSearch(ProjectionContract):
    store = search.STORE
    one_record_per_conversation = True

    def counts(self, settings):
        es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
        es.indices.refresh(index=settings.search_alias)
        docs = es.search(index=settings.search_alias, size=100, query={"match_all": {}})["hits"]["hits"]
        return len(docs), sum(d["_source"]["event_count"] for d in docs)


class TestAnalytics(ProjectionContract):
    store = analytics.STORE

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
    assert first == ["0001_dashboard", "0002_event_id_not_unique", "0003_digest", "0004_forks"] and second == []


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
