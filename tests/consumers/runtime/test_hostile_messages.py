"""Messages of any size and shape on the real broker: none stops a projector, each is dead-lettered once per
projection and position (across restarts too), and the three stores keep agreeing."""

from __future__ import annotations

import hashlib
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from agentlog.consumers.operations.read_models import ReadModels
from agentlog.consumers.operations.rebuild import rebuild
from agentlog.consumers.runtime.dead_letters import ID, ORIGINAL_SHA256, ORIGINAL_SIZE, REASON, SOURCE_OFFSET, TRUNCATED
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.projections.dashboard import connect
from agentlog.projections.registry import NAMES, build
from agentlog.schemas import Codec, Event, EventType
from agentlog.schemas.codec import MAGIC
from tests.conftest import clickhouse_rows
from tests.consumers.test_end_to_end import _dead_letters, fill, project, store_counts
from tests.factories import written_without_the_rule

codec = Codec()


def _conversation(cid: str, n: int) -> list[Event]:
    return [Event(cid, i + 1, EventType.CONVERSATION_STARTED if i == 0 else EventType.RESPONSE_GENERATED, "agent",
                  {"user_message": "hello", "channel": None} if i == 0 else {"response": f"answer {i}"})
            for i in range(n)]


def test_a_message_too_large_for_the_dead_letter_topic_stops_no_projector(isolated: Settings) -> None:
    """A 1,000,002-byte message (the broker takes it) and others the decoder refuses, last in their partition:
    every projection goes past them, dead-letters each once (a record for the large one), and a restart
    sends none again."""
    cid = f"conv-{uuid.uuid4().hex[:8]}"
    good = _conversation(cid, 3)
    large = MAGIC + b"\x00" * 1_000_000
    nan_cost = Event(cid, 4, EventType.LLM_CALLED, "agent", {"model": "m", "input_tokens": 1, "output_tokens": 1,
                                                            "latency_ms": 1.0, "cost_usd": float("nan")})
    poison = {large: None, codec.encode(good[1]) + b"junk": None, written_without_the_rule(nan_cost): None,
              codec.encode(Event("conv-other", 1, EventType.RESPONSE_GENERATED, "agent", {"response": "hi"})): None}
    producer = Producer(isolated.kafka_config(**{"message.max.bytes": 2_000_000, "compression.type": "lz4"}))
    sends = [codec.encode(e) for e in good] + list(poison)
    for value in sends:  # one key: one partition, the poison last in it
        producer.produce(isolated.events_topic, key=cid, value=value,
                         on_delivery=lambda err, msg: poison.__setitem__(msg.value(), msg.offset())
                         if msg.value() in poison else None)
    assert producer.flush(20) == 0

    first = project(isolated)
    assert {name: (s.events, s.dead_letters) for name, s in first.items()} == {name: (3, 4) for name in NAMES}
    again = project(isolated)  # a restart: nothing is read again, nothing is dead-lettered again
    assert {name: (s.events, s.dead_letters) for name, s in again.items()} == {name: (0, 0) for name in NAMES}

    letters = _dead_letters(isolated, 3 * 4 + 1)
    assert len(letters) == 3 * 4
    assert len({dict(m.headers())[ID] for m in letters}) == 3 * 4
    records = [m for m in letters if dict(m.headers()).get(TRUNCATED) == b"true"]
    assert len(records) == 3
    for record in records:
        headers = dict(record.headers())
        assert int(headers[ORIGINAL_SIZE]) == len(large)
        assert headers[ORIGINAL_SHA256].decode() == hashlib.sha256(large).hexdigest()
        assert int(headers[SOURCE_OFFSET]) == poison[large]
        assert record.value() == large[:4096]
    reasons = {dict(m.headers())[ID].decode().split("/")[-1]: dict(m.headers())[REASON] for m in letters}
    assert set(reasons.values()) == {b"undecodable"}
    counts = store_counts(isolated)
    assert (counts["views"], counts["archived"], counts["ch_events"], counts["documents"]) == (1, 3, 3, 1)


def test_two_writers_of_one_sequence_number_the_first_in_the_log_wins_everywhere(isolated: Settings) -> None:
    cid = f"conv-{uuid.uuid4().hex[:8]}"
    first, second = _conversation(cid, 2), _conversation(cid, 2)
    producer = Producer(isolated.kafka_config())
    for event in [first[0], second[0], first[1], second[1]]:
        producer.produce(isolated.events_topic, key=cid, value=codec.encode(event))
    assert producer.flush(10) == 0
    stats = project(isolated)
    assert {name: s.events for name, s in stats.items()} == {name: 4 for name in NAMES}
    counts = store_counts(isolated)
    assert (counts["views"], counts["archived"], counts["ch_events"], counts["documents"]) == (1, 2, 2, 1)
    with connect(isolated, role=PostgresRole.OWNER) as conn:
        kept = conn.execute("SELECT event_id::text FROM agent_events ORDER BY sequence_number").fetchall()
        anomalies = conn.execute("SELECT kind, count(*) FROM sequence_anomalies GROUP BY kind").fetchall()
    assert [k for (k,) in kept] == [first[0].event_id, first[1].event_id]
    assert anomalies == [("duplicate", 2)]
    db = isolated.clickhouse_database
    assert [str(e) for (e,) in clickhouse_rows(
        isolated, f"SELECT event_id FROM {db}.agent_events ORDER BY sequence_number")] == [first[0].event_id,
                                                                                           first[1].event_id]
    assert clickhouse_rows(isolated, f"SELECT kind, count() FROM {db}.sequence_anomalies FINAL GROUP BY kind") == [
        ("duplicate", 2)]


def test_lag_right_after_a_rebuild_counts_from_the_store_and_the_rebuilds_group_is_gone(isolated: Settings) -> None:
    """A rebuild leaves the live consumer group's committed offsets where they were (here: nowhere); lag
    counts from the store's positions, and the rebuild deletes its own group."""
    fill(isolated, 20, seed=3)
    for name in NAMES:  # the live read models exist, no live projector has run
        live = build(name, isolated)
        live.setup()
        live.close()
    started = set(_groups(isolated))
    for name in NAMES:
        rebuild(isolated, name)
    models = ReadModels(isolated)
    try:
        lag = models.lag(fresh=True)
    finally:
        models.close()
    assert {name: sum(parts.values()) for name, parts in lag.items()} == {name: 0 for name in NAMES}
    assert [g for g in set(_groups(isolated)) - started if ".rebuild." in g] == []


def _groups(settings: Settings) -> list[str]:
    admin = AdminClient(settings.kafka_config())
    listed = admin.list_consumer_groups(request_timeout=10).result()
    return [g.group_id for g in listed.valid]


def test_a_dead_letter_is_sent_once_when_its_position_was_not_kept(isolated: Settings) -> None:
    """A projector that stopped after the broker had its letters and before its store kept the position past
    them (a rebuild replaying the log is the same case): the next one finds them on the dead-letter topic."""
    cid = f"conv-{uuid.uuid4().hex[:8]}"
    good = _conversation(cid, 2)
    producer = Producer(isolated.kafka_config(**{"compression.type": "lz4"}))
    for value in [codec.encode(good[0]), codec.encode(good[1]) + b"junk", codec.encode(good[1])]:
        producer.produce(isolated.events_topic, key=cid, value=value)
    assert producer.flush(20) == 0

    first = project(isolated)
    assert {name: s.dead_letters for name, s in first.items()} == {name: 1 for name in NAMES}
    for name in NAMES:  # the log read again from its beginning, the letters already there
        rebuild(isolated, name)
    letters = _dead_letters(isolated, 3 + 1)
    assert sorted(dict(m.headers())[ID].decode().split("/")[0] for m in letters) == sorted(NAMES)
    assert store_counts(isolated)["views"] == 1
