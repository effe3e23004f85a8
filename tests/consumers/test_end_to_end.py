"""The read side end to end on the real services: agreement, poison events, outages, crashes, rebuilds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from agentlog.consumers.operations.rebuild import rebuild
from agentlog.consumers.runtime import Projector
from agentlog.consumers.runtime.dead_letters import ERROR, ID, REASON, SOURCE_OFFSET, SOURCE_PARTITION
from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.keys import KeyStoreUnavailable
from agentlog.deploy.local.postgres import Postgres
from agentlog.deploy.producer_keys import ProducerKeys
from agentlog.deploy.settings import Settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.traffic import send
from agentlog.projections.base import Batch, Projection, ProjectionError
from agentlog.projections.dashboard import connect
from agentlog.projections.registry import NAMES, build
from agentlog.projections.search.queries import search
from agentlog.schemas import Codec, Event, EventType
from agentlog.schemas.codec import MAGIC
from tests.conftest import ROOT, clickhouse_rows, env_of


def fill(settings: Settings, conversations: int, seed: int = 1) -> dict:
    return asyncio.run(send(settings, conversations, seed=seed, topic=settings.events_topic))


def project(settings: Settings, names=NAMES) -> dict:
    return {name: Projector(build(name, settings), settings).run(until_caught_up=True) for name in names}


def store_counts(settings: Settings) -> dict:
    with connect(settings, role=PostgresRole.OWNER) as conn:
        views, tools = conn.execute("SELECT count(*), coalesce(sum(tool_count), 0) FROM conversation_views").fetchone()
        archived, tool_called = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE event_type = 'tool_called') FROM agent_events").fetchone()
    [(ch_events, ch_unique, ch_calls)] = clickhouse_rows(
        settings, f"SELECT count(), uniqExact(event_id), (SELECT sum(calls) FROM "
                  f"{settings.clickhouse_database}.tool_usage_hourly) FROM {settings.clickhouse_database}.agent_events")
    es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
    es.indices.refresh(index=settings.search_alias)
    documents = es.count(index=settings.search_alias)["count"]
    return {"views": views, "view_tools": tools, "archived": archived, "tool_called": tool_called,
            "ch_events": ch_events, "ch_unique": ch_unique, "ch_tool_calls": ch_calls, "documents": documents}


async def _record_unique(settings: Settings, phrase: str) -> str:
    async with EventLog(settings, topic=settings.events_topic) as log:
        async with Conversation(log, agent="triage-agent") as conv:
            await conv.started(f"My parcel smells of {phrase}, what now?")
            await conv.response("Please send us a photo.")
            return conv.conversation_id


def test_after_simulate_and_project_the_three_stores_agree_with_the_log(isolated: Settings) -> None:
    summary = fill(isolated, 300)
    phrase = f"lavender{uuid.uuid4().hex[:8]}"
    unique_id = asyncio.run(_record_unique(isolated, phrase))
    events = summary["events"] + 2
    stats = project(isolated)
    assert {name: s.events for name, s in stats.items()} == {name: events for name in NAMES}
    counts = store_counts(isolated)
    tool_called = summary["by_type"]["tool_called"]
    assert counts == {"views": 301, "view_tools": tool_called, "archived": events, "tool_called": tool_called,
                      "ch_events": events, "ch_unique": events, "ch_tool_calls": tool_called, "documents": 301}
    found = search(clients.elasticsearch(isolated, user=SearchUser.ADMIN), phrase, index=isolated.search_alias)
    assert [hit["conversation_id"] for hit in found["hits"]] == [unique_id]
    assert any(phrase in fragment for fragment in found["hits"][0]["highlights"])


def _dead_letters(settings: Settings, expected: int) -> list:
    consumer = Consumer(settings.kafka_config(**{"group.id": f"t-{uuid.uuid4()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([settings.dlq_topic])
    found: list = []
    deadline = time.monotonic() + 20
    while len(found) < expected and time.monotonic() < deadline:
        found += [m for m in consumer.consume(100, timeout=0.5) if not m.error()]
    consumer.close()
    return found


def test_poison_events_go_to_the_dead_letter_topic_and_the_rest_is_applied(isolated: Settings) -> None:
    codec = Codec()
    good = [Event("conv-good", i + 1, EventType.RESPONSE_GENERATED if i else EventType.CONVERSATION_STARTED, "a",
                  {"response": f"answer {i}"} if i else {"user_message": "hello", "channel": None})
            for i in range(4)]
    bad_apply = Event("conv-fails", 1, EventType.CONVERSATION_STARTED, "a", {"user_message": "the store refuses this",
                                                                              "channel": None})
    unknown = MAGIC + b"\x01\x02\x03\x04\x05\x06\x07\x08" + codec.encode(good[0])[10:]
    producer = Producer(isolated.kafka_config())
    sends = [("conv-good", codec.encode(good[0])), ("conv-good", b"not avro at all"), ("conv-good", unknown),
             ("conv-fails", codec.encode(bad_apply))] + [("conv-good", codec.encode(e)) for e in good[1:]]
    stored_at: dict[bytes, tuple[int, int]] = {}
    for key, value in sends:
        producer.produce(isolated.events_topic, key=key, value=value,
                         on_delivery=lambda err, msg: stored_at.__setitem__(msg.value(), (msg.partition(), msg.offset())))
    assert producer.flush(10) == 0

    stats = Projector(FailsOn("conv-fails", build("dashboard", isolated)), isolated).run(until_caught_up=True)
    assert stats.dead_letters == 3
    with connect(isolated, role=PostgresRole.OWNER) as conn:
        assert conn.execute("SELECT sequence_number FROM agent_events ORDER BY 1").fetchall() == [(1,), (2,), (3,), (4,)]
        assert conn.execute("SELECT id, event_count FROM conversation_views").fetchall() == [("conv-good", 4)]
    letters = {m.value(): dict(m.headers()) for m in _dead_letters(isolated, 3)}
    poison = {b"not avro at all": "undecodable", unknown: "undecodable", codec.encode(bad_apply): "projection_failed"}
    assert {value: headers[REASON].decode() for value, headers in letters.items()} == poison
    assert {value: (int(headers[SOURCE_PARTITION]), int(headers[SOURCE_OFFSET]))
            for value, headers in letters.items()} == {value: stored_at[value] for value in poison}
    assert all(headers[ERROR] for headers in letters.values())
    assert {headers[ID].decode() for headers in letters.values()} == {
        f"dashboard/{isolated.events_topic}/{partition}/{offset}" for partition, offset in
        (stored_at[value] for value in poison)}


def test_a_postgres_outage_loses_nothing_and_the_projector_resumes_by_itself(stack: Settings,
                                                                                isolated: Settings) -> None:
    postgres = Postgres(stack)
    if not postgres.status().managed:
        pytest.skip("this Postgres is not run by this checkout's stack, so the test cannot stop it")
    first = fill(isolated, 100, seed=2)
    stop = threading.Event()
    projector = Projector(build("dashboard", isolated), isolated, max_backoff=2)
    thread = threading.Thread(target=projector.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    keys = ProducerKeys(isolated, ttl=0, pool=3, pool_max=3)  # three keys at hand; each checked at every turn
    known = Event(f"known-{uuid.uuid4().hex[:8]}", 1, EventType.CONVERSATION_STARTED, "a",
                  {"user_message": "hi", "channel": None})
    new = [replace(known, conversation_id=f"new-{n}-{uuid.uuid4().hex[:8]}", payload={
        "user_message": f"begun while the key store was away {n}", "channel": None}) for n in range(3)]
    try:
        _wait_for(lambda: _archived(isolated) == first["events"], 60)
        asyncio.run(_append(isolated, keys, [known]))
        postgres.down()
        # the key store is away: a conversation with its key goes on, new ones take keys from the pool while it
        # has some (bound when the store is back), and the one past it is refused as the outage it is
        asyncio.run(_append(isolated, keys, [replace(known, sequence_number=2, event_type=EventType.RESPONSE_GENERATED,
                                                     payload={"response": "hello"}), *new[:2]]))
        with pytest.raises(KeyStoreUnavailable, match="no key at hand for a new conversation, and the key store: "
                                                      "postgres at .* Connection refused"):
            asyncio.run(_append(isolated, keys, [new[2]]))
        second = fill(replace(isolated, encryption=False), 100, seed=3)  # written in the clear meanwhile
        time.sleep(3)
        assert projector.stats.retries > 0
    finally:
        postgres.up()
        keys.close()
    assert keys.unbound_at_close == 0  # the store was back: the pool's conversations were bound
    _wait_for(lambda: _archived(isolated) == first["events"] + second["events"] + 4, 60)
    stop.set()
    thread.join(30)
    with connect(isolated, role=PostgresRole.OWNER) as conn:
        assert conn.execute("SELECT count(*) FROM conversation_views").fetchone()[0] == 203
        assert conn.execute("SELECT final_response FROM conversation_views WHERE id = %s",
                            (known.conversation_id,)).fetchone()[0] == "hello"
        assert [m for (m,) in conn.execute("SELECT user_message FROM conversation_views WHERE id = ANY(%s) ORDER BY 1",
                                           ([e.conversation_id for e in new],)).fetchall()] == [
            "begun while the key store was away 0", "begun while the key store was away 1"]
    with clients.postgres(isolated, role=PostgresRole.OWNER, schema=isolated.keys_schema) as conn:
        bound = conn.execute("SELECT count(*) FROM data_keys WHERE conversation_id = ANY(%s)",
                             ([known.conversation_id] + [e.conversation_id for e in new],)).fetchone()[0]
    assert bound == 3


async def _append(settings: Settings, keys: ProducerKeys, events: list[Event]) -> None:
    async with EventLog(settings, codec=Codec(keys=keys)) as log:
        await log.append_many(events)


def _archived(settings: Settings) -> int:
    try:
        with connect(settings, role=PostgresRole.OWNER) as conn:
            return conn.execute("SELECT count(*) FROM agent_events").fetchone()[0]
    except Exception:
        return -1


def _wait_for(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


@pytest.mark.slow
def test_a_projector_killed_mid_batch_restarts_with_exact_counts(isolated: Settings, tmp_path) -> None:
    own = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse", batch_size=500)
    summary = fill(own, 2500, seed=4)
    env = {**os.environ, **env_of(own)}
    command = [sys.executable, "-m", "agentlog.consumers.cli", "project"]
    for kill_at in (0.2, 0.6):
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        _wait_for(lambda kill_at=kill_at: _archived(own) >= kill_at * summary["events"], 120)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _archived(own) < summary["events"]
    done = subprocess.run(command + ["--until-caught-up"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    counts = store_counts(own)
    events, tool_called = summary["events"], summary["by_type"]["tool_called"]
    assert counts == {"views": 2500, "view_tools": tool_called, "archived": events, "tool_called": tool_called,
                      "ch_events": events, "ch_unique": events, "ch_tool_calls": tool_called, "documents": 2500}


def _snapshot(settings: Settings) -> dict:
    with connect(settings, role=PostgresRole.OWNER) as conn:
        views = conn.execute("SELECT id, status, tool_count, handoff_count, event_count, last_sequence, duration_ms "
                             "FROM conversation_views ORDER BY id").fetchall()
    es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
    es.indices.refresh(index=settings.search_alias)
    docs = es.search(index=settings.search_alias, size=1000, sort=["conversation_id"],
                     source_includes=["status", "event_count"])["hits"]["hits"]
    aggregates = clickhouse_rows(settings, f"SELECT agent_name, tool_name, sum(calls) FROM "
                                           f"{settings.clickhouse_database}.tool_usage_hourly GROUP BY 1, 2 ORDER BY 1, 2")
    return {"views": views, "docs": [(d["_id"], d["_source"]) for d in docs], "aggregates": aggregates,
            "counts": store_counts(settings)}


def test_a_rebuild_while_serving_answers_throughout_and_equals_the_old_model(isolated: Settings) -> None:
    fill(isolated, 200, seed=5)
    project(isolated)
    before = _snapshot(isolated)
    failures: list[str] = []
    answered = {"dashboard": 0, "search": 0}
    stop = threading.Event()

    def query() -> None:
        es = clients.elasticsearch(isolated, user=SearchUser.ADMIN)
        while not stop.is_set():
            try:
                with connect(isolated, role=PostgresRole.OWNER) as conn:
                    if conn.execute("SELECT count(*) FROM conversation_views").fetchone()[0] != 200:
                        failures.append("dashboard count")
                answered["dashboard"] += 1
                if es.count(index=isolated.search_alias)["count"] != 200:
                    failures.append("search count")
                answered["search"] += 1
            except Exception as exc:  # any failed query is a finding
                failures.append(repr(exc))

    thread = threading.Thread(target=query, daemon=True)
    thread.start()
    try:
        results = {name: rebuild(isolated, name) for name in NAMES}
    finally:
        stop.set()
        thread.join(10)
    assert failures == []
    assert min(answered.values()) > 3
    assert {name: r.events for name, r in results.items()} == {name: before["counts"]["archived"] for name in NAMES}
    assert _snapshot(isolated) == before


@pytest.mark.parametrize("name", NAMES)
def test_a_poison_event_between_batches_is_passed_once_by_every_projection(isolated: Settings, name: str) -> None:
    """One message a batch: the poison one is a batch with nothing to write, and the store's position
    must still move past it (else the next batch looks like a gap and is rewound forever)."""
    codec = Codec()
    events = [Event("conv-p", i + 1, EventType.CONVERSATION_STARTED if i == 0 else EventType.RESPONSE_GENERATED,
                    "a", {"user_message": "hi", "channel": None} if i == 0 else {"response": f"r{i}"})
              for i in range(3)]
    producer = Producer(isolated.kafka_config())
    for value in [codec.encode(events[0]), b"poison", codec.encode(events[1]), codec.encode(events[2])]:
        producer.produce(isolated.events_topic, key="conv-p", value=value)
    assert producer.flush(10) == 0
    watching = DeadLettersAtApply(build(name, isolated), isolated)
    projector = Projector(watching, isolated, batch_size=1)
    thread = threading.Thread(target=projector.run, kwargs={"until_caught_up": True}, daemon=True)
    thread.start()
    thread.join(90)
    assert not thread.is_alive(), "the projector did not get past the poison message"
    assert (projector.stats.events, projector.stats.dead_letters) == (3, 1)
    poison_offset = 1
    passing = [letters for ends, letters in watching.seen if max(ends.values()) > poison_offset]
    assert passing and all(letters == 1 for letters in passing), \
        "the store's position moved past the poison before the broker had its dead letter"


class FailsOn(Projection):
    """A real projection whose store refuses one conversation's events (a fault no event the codec accepts
    makes real: every store takes what the rule allows)."""

    def __init__(self, conversation_id: str, inner: Projection) -> None:
        self.conversation_id, self.inner, self.name = conversation_id, inner, inner.name

    def setup(self) -> None:
        self.inner.setup()

    def positions(self, topic: str, partitions: list[int]):
        return self.inner.positions(topic, partitions)

    def apply(self, batch: Batch) -> None:
        if any(r.event.conversation_id == self.conversation_id for r in batch.records):
            raise ProjectionError(f"the store refuses conversation {self.conversation_id}")
        self.inner.apply(batch)

    def close(self) -> None:
        self.inner.close()


class DeadLettersAtApply(Projection):
    """A real projection, noting at each batch how many dead letters the broker already has."""

    def __init__(self, inner: Projection, settings: Settings) -> None:
        self.inner, self.settings, self.name = inner, settings, inner.name
        self.seen: list[tuple[dict[int, int], int]] = []

    def setup(self) -> None:
        self.inner.setup()

    def positions(self, topic: str, partitions: list[int]):
        return self.inner.positions(topic, partitions)

    def apply(self, batch: Batch) -> None:
        consumer = Consumer(self.settings.kafka_config(**{"group.id": "agentlog.test.watch"}))
        try:
            topic = self.settings.dlq_topic
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            letters = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
        finally:
            consumer.close()
        self.seen.append((dict(batch.ends), letters))
        self.inner.apply(batch)

    def close(self) -> None:
        self.inner.close()
