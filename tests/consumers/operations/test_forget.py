"""Crypto-shredding against the real services: the text is never in the log's bytes, every store holds it
until ``forget``, then none does, in any rebuild, while counts, tokens and costs stay and other subjects keep
theirs; v3 events in the clear and v4 sealed ones live in one conversation; a broken seal is dead-lettered."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from agentlog.consumers.operations.forget import NothingToForget, forget
from agentlog.consumers.operations.rebuild import rebuild
from agentlog.consumers.operations.verify import verify
from agentlog.consumers.runtime import Projector
from agentlog.consumers.runtime.dead_letters import ERROR
from agentlog.deploy import clients, kafka
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.keys import Binding, KeyStore, Opener
from agentlog.deploy.producer_keys import ProducerKeys
from agentlog.deploy.settings import Settings
from agentlog.producers import EventLog
from agentlog.projections.dashboard import connect
from agentlog.projections.registry import NAMES, build
from agentlog.schemas import Codec, Event, EventType
from agentlog.schemas.catalog import AVRO_DIR, Catalog
from agentlog.schemas.sealing import ERASED, seal
from tests.conftest import agentlog, clickhouse_rows, env_of
from tests.consumers.test_end_to_end import _dead_letters, project


def _conversation(cid: str, subject: str | None, marker: str) -> list[Event]:
    """A conversation whose every text field holds ``marker``."""
    at = datetime.now(UTC) - timedelta(seconds=10)
    kinds = [(EventType.CONVERSATION_STARTED, {"user_message": f"hello, I am {marker}", "channel": None}),
             (EventType.TOOL_CALLED, {"tool_call_id": "t1", "tool_name": "lookup",
                                      "input_json": json.dumps({"customer": marker})}),
             (EventType.TOOL_RESULT, {"tool_call_id": "t1", "tool_name": "lookup",
                                      "output_json": json.dumps({"found": marker}), "status": "ok",
                                      "duration_ms": 12.5}),
             (EventType.LLM_CALLED, {"model": "gpt-test", "input_tokens": 120, "output_tokens": 30,
                                     "latency_ms": 250.0, "cost_usd": 0.0125}),
             (EventType.HANDOFF_INITIATED, {"from_agent": "triage", "to_agent": "billing",
                                            "reason": f"billing question of {marker}"}),
             (EventType.RESPONSE_GENERATED, {"response": f"done, {marker}"})]
    return [Event(cid, n, kind, "triage", payload, occurred_at=at + timedelta(milliseconds=n), subject_id=subject)
            for n, (kind, payload) in enumerate(kinds, start=1)]


def _write(settings: Settings, events: list[Event], codec: Codec | None = None) -> None:
    async def go() -> None:
        async with EventLog(settings, codec=codec) as log:
            await log.append_many(events)
    asyncio.run(go())


def _raw(settings: Settings) -> list[bytes]:
    return [m.value() or b"" for m in kafka.read_to_end(settings, settings.events_topic)]


def _found(settings: Settings, marker: str) -> dict[str, int]:
    """Where ``marker`` is, store by store: rows, documents and rows holding it anywhere."""
    with connect(settings, role=PostgresRole.OWNER) as conn:
        [archived] = conn.execute("SELECT count(*) FROM agent_events e WHERE e::text LIKE %s",
                                  (f"%{marker}%",)).fetchone() or [0]
        [views] = conn.execute("SELECT count(*) FROM conversation_views v WHERE v::text LIKE %s",
                               (f"%{marker}%",)).fetchone() or [0]
    es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
    es.indices.refresh(index=settings.search_alias)
    hits = es.search(index=settings.search_alias, query={"match_all": {}}, size=1000)["hits"]["hits"]
    es.close()
    documents = sum(marker in json.dumps(hit["_source"], ensure_ascii=False) for hit in hits)
    db = settings.clickhouse_database
    [(rows,)] = clickhouse_rows(settings, f"SELECT count() FROM {db}.agent_events WHERE position(payload, "
                                          f"'{marker}') > 0 OR position(tool_call_id, '{marker}') > 0")
    return {"archive": archived, "views": views, "documents": documents, "facts": rows}


def _figures(settings: Settings, ids: list[str]) -> list[tuple]:
    """What analytics says of the conversations: events, tokens, cost, and the hourly tables' calls."""
    db = settings.clickhouse_database
    quoted = ", ".join(f"'{cid}'" for cid in ids)
    return clickhouse_rows(settings, f"SELECT conversation_id, count(), sum(input_tokens), sum(output_tokens), "
                                     f"round(sum(cost_usd), 6) FROM {db}.agent_events WHERE conversation_id IN "
                                     f"({quoted}) GROUP BY conversation_id ORDER BY conversation_id") + \
        clickhouse_rows(settings, f"SELECT sum(calls), sum(input_tokens) FROM {db}.llm_usage_hourly")


def _subjects(settings: Settings, ids: list[str]) -> dict[str, list[str]]:
    """The subjects analytics' fact table names for each conversation."""
    quoted = ", ".join(f"'{cid}'" for cid in ids)
    return dict(clickhouse_rows(settings, f"SELECT conversation_id, groupUniqArray(subject_id) FROM "
                                          f"{settings.clickhouse_database}.agent_events WHERE conversation_id IN "
                                          f"({quoted}) GROUP BY conversation_id"))


def _running(settings: Settings) -> tuple[threading.Event, list[threading.Thread]]:
    stop = threading.Event()
    threads = [threading.Thread(target=Projector(build(name, settings), settings, batch_wait=0.05).run,
                                kwargs={"stop": stop}, daemon=True) for name in NAMES]
    for thread in threads:
        thread.start()
    return stop, threads


def test_forget_erases_a_subject_everywhere_for_good_and_leaves_the_rest(isolated: Settings) -> None:
    tag = uuid.uuid4().hex[:10]
    subject, other = f"user-{tag}", f"user-{tag}-other"
    secret, kept = f"zqsecret{tag}", f"zqkept{tag}"
    mine = [f"a-{tag}-{i}" for i in range(2)]
    theirs = f"b-{tag}"
    _write(isolated, [e for cid in mine for e in _conversation(cid, subject, secret)]
           + _conversation(theirs, other, kept))
    raw = _raw(isolated)
    assert len(raw) == 18 and not any(secret.encode() in m or kept.encode() in m for m in raw)  # never in the log

    project(isolated)
    before = _found(isolated, secret)
    assert before["archive"] == 2 * 5 and before["views"] == 2 and before["documents"] == 2 \
        and before["facts"] == 2 * 5, before  # 5 events of each hold text (the LLM call none)
    figures = _figures(isolated, [*mine, theirs])
    assert _subjects(isolated, [*mine, theirs]) == {mine[0]: [subject], mine[1]: [subject], theirs: [other]}

    stop, threads = _running(isolated)
    try:
        done = forget(isolated, subject=subject, requested_by="privacy-team", wait=90)
        # run again (as after a run the broker stopped once the keys were gone): it finds them, announces again
        again = forget(isolated, subject=subject, requested_by="privacy-team", wait=90)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert sorted(done.conversations) == sorted(mine) and len(done.key_ids) == 2 and done.in_clear == []
    assert done.deleted == 2 and again.deleted == 0 and again.key_ids == done.key_ids
    assert sorted(again.conversations) == sorted(mine) and all(s.applied for s in again.stores)
    assert {s.store: (s.applied, s.conversations) for s in done.stores} == {n: (True, 2) for n in NAMES}
    assert _found(isolated, secret) == {"archive": 0, "views": 0, "documents": 0, "facts": 0}
    assert _found(isolated, kept) == {"archive": 5, "views": 1, "documents": 1, "facts": 5}
    assert _figures(isolated, [*mine, theirs]) == figures
    forgotten_subject = {mine[0]: [""], mine[1]: [""], theirs: [other]}
    assert _subjects(isolated, [*mine, theirs]) == forgotten_subject
    with connect(isolated, role=PostgresRole.READER) as conn:
        rows = conn.execute("SELECT user_message, final_response, event_count, input_tokens FROM conversation_views "
                            "WHERE id = ANY(%s)", (mine,)).fetchall()
    assert rows == [(ERASED, ERASED, 6, 120)] * 2
    assert all(r.ok for r in verify(isolated, list(NAMES))), "a forgetting changes no digest"

    for name in NAMES:  # a rebuild reads the log again: the keys are gone, so the text stays erased
        assert rebuild(isolated, name).verified == 3
    assert _found(isolated, secret) == {"archive": 0, "views": 0, "documents": 0, "facts": 0}
    assert _found(isolated, kept)["archive"] == 5
    assert _figures(isolated, [*mine, theirs]) == figures
    assert _subjects(isolated, [*mine, theirs]) == forgotten_subject
    forgotten = [m for m in _raw(isolated) if b"subject_forgotten" in m]
    assert len(forgotten) == 4 and all(b"privacy-team" in m and secret.encode() not in m for m in forgotten)


def test_forget_on_the_command_line_names_what_it_erased(isolated: Settings) -> None:
    cid = f"c-{uuid.uuid4().hex[:10]}"
    _write(isolated, _conversation(cid, None, "zqcli"))
    project(isolated)
    stop, threads = _running(isolated)
    try:  # the projectors run here; the command asks the stores (the embedded one through its engine)
        done = agentlog("forget", "--conversation", cid, "--json", "--wait", "90", env=env_of(isolated))
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["conversations"] == [cid] and report["keys_deleted"] == 1
    assert {s["store"]: (s["applied"], s["conversations"]) for s in report["stores"]} == {n: (True, 1) for n in NAMES}
    again = agentlog("forget", "--subject", "nobody-at-all", env=env_of(isolated))
    assert again.returncode == 1 and "holds no conversation of it" in again.stderr and "Traceback" not in again.stderr


def test_v3_events_in_the_clear_and_v4_sealed_ones_live_in_one_conversation(isolated: Settings,
                                                                            tmp_path: Path) -> None:
    for version in (1, 2, 3):
        shutil.copy(AVRO_DIR / f"agent_event.v{version}.avsc", tmp_path)
    old = Codec(Catalog(tmp_path))
    cid = f"mixed-{uuid.uuid4().hex[:10]}"
    events = [replace(e, subject_id=None) for e in _conversation(cid, None, "zqmixed")]
    _write(isolated, events[:3], codec=old)
    _write(isolated, events[3:])
    raw = _raw(isolated)
    assert [b"zqmixed" in m for m in raw] == [True, True, True, False, False, False]
    decoded = [Codec().decode(m) for m in raw]
    current = Catalog().current.version  # sealing came with v4; what is written now is the newest
    assert current >= 4 and [e.schema_version for e in decoded] == [3, 3, 3] + [current] * 3
    assert [e.sealed is not None for e in decoded] == [False, False, False, False, True, True]  # the LLM call: no text

    project(isolated)
    with connect(isolated, role=PostgresRole.READER) as conn:
        view = conn.execute("SELECT event_count, user_message, final_response FROM conversation_views WHERE id = %s",
                            (cid,)).fetchone()
        versions = [v for (v,) in conn.execute("SELECT schema_version FROM agent_events WHERE conversation_id = %s "
                                               "ORDER BY sequence_number", (cid,)).fetchall()]
    assert view == (6, "hello, I am zqmixed", "done, zqmixed") and versions == [3, 3, 3] + [current] * 3
    assert _found(isolated, "zqmixed") == {"archive": 5, "views": 1, "documents": 1, "facts": 5}
    assert all(r.ok and r.equal == 1 for r in verify(isolated, list(NAMES)))


def test_a_seal_altered_in_the_log_is_dead_lettered_and_the_rest_is_applied(isolated: Settings) -> None:
    cid = f"tampered-{uuid.uuid4().hex[:10]}"
    events = _conversation(cid, None, "zqtamper")
    keys = ProducerKeys(isolated)
    codec = Codec(keys=keys)
    values = [codec.encode(e) for e in events]
    keys.close()
    altered = bytearray(values[-1])
    sealed = Codec().decode(values[-1]).sealed
    assert sealed is not None
    altered[values[-1].rfind(sealed) + len(sealed) - 1] ^= 0x01  # the last byte of the seal's tag
    values[-1] = bytes(altered)
    producer = Producer(isolated.kafka_config())
    for value in values:
        producer.produce(isolated.events_topic, key=cid, value=value)
    assert producer.flush(20) == 0
    stats = project(isolated)
    assert {name: s.dead_letters for name, s in stats.items()} == {name: 1 for name in NAMES}
    assert _found(isolated, "zqtamper") == {"archive": 4, "views": 1, "documents": 1, "facts": 4}  # all but the last
    with connect(isolated, role=PostgresRole.READER) as conn:
        assert conn.execute("SELECT event_count, final_response FROM conversation_views WHERE id = %s",
                            (cid,)).fetchone() == (5, None)
    letters = _dead_letters(isolated, 3)
    assert len(letters) == 3 and all(b"do not open" in dict(m.headers())[ERROR] for m in letters), \
        [m.headers() for m in letters]


def test_a_key_bound_after_its_subject_or_conversation_was_forgotten_is_deleted_instead(isolated: Settings) -> None:
    store = KeyStore(isolated)
    try:
        tag = uuid.uuid4().hex[:10]
        subject, conversation = f"late-{tag}", f"late-conv-{tag}"
        [(early, _), (later, _), (by_conversation, _), (other, _)] = store.register(4)
        before = datetime.now(UTC) - timedelta(seconds=5)
        with pytest.raises(NothingToForget, match="a key bound to it later is deleted"):
            forget(isolated, subject=subject, requested_by="privacy-team", wait=1)  # no key of it yet: a tombstone
        store.delete(conversation_id=conversation)
        after = datetime.now(UTC) + timedelta(seconds=5)
        shredded = store.bind([Binding(early, f"c1-{tag}", subject, before),  # first used before the forgetting
                               Binding(later, f"c2-{tag}", subject, after),  # a new conversation of the subject
                               Binding(by_conversation, conversation, None, before),
                               Binding(other, f"c3-{tag}", f"someone-{tag}", before)])
        assert sorted(shredded) == sorted([early, by_conversation])
        assert store.existing([early, later, by_conversation, other]) == {later, other}
        with clients.postgres(isolated, role=PostgresRole.OWNER, schema=isolated.keys_schema) as conn:
            noted = dict(conn.execute("SELECT key_id::text, subject_id FROM forgotten_keys WHERE key_id = ANY(%s)",
                                      ([early, by_conversation],)).fetchall())
            bound = conn.execute("SELECT conversation_id, subject_id FROM data_keys WHERE key_id = %s",
                                 (later,)).fetchone()
        assert noted == {early: subject, by_conversation: None} and bound == (f"c2-{tag}", subject)
    finally:
        store.close()


def test_a_reader_binds_what_a_stopped_producer_left_unbound_and_keeps_the_tombstone(isolated: Settings) -> None:
    """A producer that stopped before binding (the key store away) leaves its keys unbound: the reader of the
    log binds them before it opens anything, or finds them forgotten and reads the text as erased."""
    tag = uuid.uuid4().hex[:10]
    kept, gone = f"kept-{tag}", f"gone-{tag}"
    store = KeyStore(isolated)
    [(kept_key, kept_bytes), (gone_key, gone_bytes)] = store.register(2)  # taken from its pool, never bound
    store.close()
    values = [Codec().encode(seal(e, kept_key, kept_bytes)) for e in _conversation(f"k-{tag}", kept, "zqunboundkept")]
    values += [Codec().encode(seal(e, gone_key, gone_bytes)) for e in _conversation(f"g-{tag}", gone, "zqunboundgone")]
    with pytest.raises(NothingToForget):
        forget(isolated, subject=gone, requested_by="privacy-team", wait=1)
    opener = Opener(isolated)
    try:
        opened = opener.open_all([Codec().decode(v) for v in values])
    finally:
        opener.close()
    texts = [e.payload.get("user_message") for e in opened if e.event_type == EventType.CONVERSATION_STARTED]
    assert texts == ["hello, I am zqunboundkept", "[erased]"]
    store = KeyStore(isolated)
    try:
        assert sorted(store.delete(subject_id=kept).conversations) == [f"k-{tag}"]  # bound by the reader, to kept
    finally:
        store.close()
