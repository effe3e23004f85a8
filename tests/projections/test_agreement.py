"""Every event the codec accepts is applied by the three real stores the same way (hypothesis): the same
events kept per conversation (the first of a sequence number wins), the same counts, nothing refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics import AnalyticsProjection
from agentlog.projections.base import Batch, Record
from agentlog.projections.dashboard import DashboardProjection, connect
from agentlog.projections.search import SearchProjection
from agentlog.schemas import Codec
from agentlog.schemas.events import CONTROL
from tests.conftest import clickhouse_rows
from tests.strategies import events, name

codec = Codec()
STEPS = st.lists(st.tuples(events, st.integers(0, 2), st.sampled_from(["next", "next", "next", "again", "skip"])),
                 min_size=1, max_size=12)


class World:
    """The stores of one private world, fed batch after batch (offsets go on across examples)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.used = 0
        """Partitions used so far: each example writes to new ones, so one that failed holds no other back."""
        self.projections = [DashboardProjection(settings), SearchProjection(settings), AnalyticsProjection(settings)]
        for projection in self.projections:
            projection.setup()

    def batch(self, events_by_conversation: list) -> Batch:
        batch = Batch(self.settings.events_topic)
        offsets: dict[int, int] = {}
        for event, which in events_by_conversation:
            partition = self.used + which
            offsets[partition] = offset = offsets.get(partition, -1) + 1
            batch.saw(partition, offset)
            batch.records.append(Record(event, batch.topic, partition, offset))
        self.used += 3
        return batch

    def close(self) -> None:
        for projection in self.projections:
            projection.close()


def _kept(settings: Settings, ids: list[str]) -> dict[str, dict]:
    """Per conversation, what each store holds: (event id, sequence number) pairs and the last sequence."""
    with connect(settings, role=PostgresRole.OWNER) as conn:
        archive = conn.execute("SELECT conversation_id, event_id::text, sequence_number FROM agent_events "
                               "WHERE conversation_id = ANY(%s)", (ids,)).fetchall()
        views = dict(conn.execute("SELECT id, last_sequence FROM conversation_views WHERE id = ANY(%s)",
                                  (ids,)).fetchall())
    facts = clickhouse_rows(settings, f"SELECT conversation_id, toString(event_id), sequence_number FROM "
                                      f"{settings.clickhouse_database}.agent_events")
    es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
    try:
        docs = es.mget(index=settings.search_alias, ids=ids)["docs"]
    finally:
        es.close()
    result: dict[str, dict] = {}
    for cid in ids:
        result[cid] = {
            "postgres": sorted((e, s) for c, e, s in archive if c == cid),
            "clickhouse": sorted((e, s) for c, e, s in facts if c == cid),
            "view_last": views.get(cid),
            "search_last": next((d["_source"]["last_sequence"] for d in docs if d["_id"] == cid and d["found"]),
                                None),
        }
    return result


@pytest.mark.slow
def test_the_three_stores_agree_on_every_accepted_event(isolated: Settings) -> None:
    world = World(isolated)
    round_ = {"n": 0}

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(STEPS, st.lists(name, min_size=3, max_size=3, unique=True))
    def check(steps, names) -> None:
        round_["n"] += 1
        ids = [f"{round_['n']}:{n}"[:256] for n in names]
        last = {cid: 0 for cid in ids}
        expected: dict[str, list] = {cid: [] for cid in ids}
        sent = []
        for event, which, how in steps:
            cid = ids[which]
            sequence = {"next": last[cid] + 1, "again": max(1, last[cid]), "skip": last[cid] + 2}[how]
            event = codec.decode(codec.encode(replace(event, conversation_id=cid, sequence_number=sequence)))
            if sequence > last[cid] and event.event_type not in CONTROL:  # a forgetting is not kept as an event
                expected[cid].append((event.event_id, sequence))
                last[cid] = sequence
            sent.append((event, which))
        batch = world.batch(sent)
        for projection in world.projections:
            projection.apply(batch)
        world.projections[1].es.indices.refresh(index=isolated.search_alias)
        kept = _kept(isolated, ids)
        for cid in ids:
            if not expected[cid]:
                assert kept[cid] == {"postgres": [], "clickhouse": [], "view_last": None, "search_last": None}
                continue
            assert kept[cid]["postgres"] == sorted(expected[cid]), cid
            assert kept[cid]["clickhouse"] == sorted(expected[cid]), cid
            assert kept[cid]["view_last"] == kept[cid]["search_last"] == last[cid], cid

    try:
        check()
    finally:
        world.close()
