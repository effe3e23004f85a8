"""The spool against the real broker: what is spooled, what it sends, and what it refuses to trust.

A broker that is down is an address nobody answers at (the outage tests kill the real one).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from agentlog.deploy.kafka import read_to_end
from agentlog.deploy.settings import Settings
from agentlog.producers import BrokerUnavailable, Conversation, Durability, EventLog, SpoolFull
from agentlog.producers.examples.sagas import book_demo_meeting
from agentlog.producers.examples.services import Services
from agentlog.producers.saga import Orchestrator
from agentlog.producers.spool import Spool, SpoolUnusable
from agentlog.producers.spool.records import HEAD, Record
from agentlog.producers.spool.status import status
from agentlog.schemas import Codec
from agentlog.schemas.events import SagaStatus
from tests.conftest import agentlog, env_of
from tests.consumers.test_end_to_end import project, store_counts
from tests.factories import make_conversation


def _down(settings: Settings) -> Settings:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return replace(settings, kafka_bootstrap=f"127.0.0.1:{port}")


def _log_of(settings: Settings, topic: str) -> list:
    codec = Codec()
    return [codec.decode(m.value()) for m in read_to_end(settings, topic)]


def _spool_while_down(settings: Settings, topic: str, spool: Path, conversations: list[list]) -> list:
    async def run() -> list:
        async with EventLog(_down(settings), topic=topic, spool_dir=spool, spool_after=0.3) as log:
            return await asyncio.gather(*(log.append(e) for c in conversations for e in c))
    return asyncio.run(run())


def _flush(settings: Settings, topic: str, spool: Path) -> EventLog:
    async def run() -> EventLog:
        async with EventLog(settings, topic=topic, spool_dir=spool) as log:
            await log.flush(60)
        return log
    return asyncio.run(run())


def test_appends_while_the_broker_is_down_are_spooled_and_the_next_event_log_sends_them_in_order(
        stack: Settings, topic: str, tmp_path: Path) -> None:
    conversations = [make_conversation(tools=3) for _ in range(20)]
    started = time.monotonic()
    receipts = _spool_while_down(stack, topic, tmp_path, conversations)
    assert {r.durability for r in receipts} == {Durability.SPOOL} and time.monotonic() - started < 15
    left = status(tmp_path)
    assert (left.total.events, left.total.conversations) == (sum(map(len, conversations)), 20)
    assert [d.live for d in left.directories] == [False]

    _flush(stack, topic, tmp_path)
    assert status(tmp_path).total.events == 0 and not [p for p in tmp_path.iterdir() if p.is_dir()]
    log = _log_of(stack, topic)
    assert sorted(e.event_id for e in log) == sorted(e.event_id for c in conversations for e in c)
    order = defaultdict(list)
    for event in log:
        order[event.conversation_id].append(event.sequence_number)
    assert all(seq == list(range(1, len(seq) + 1)) for seq in order.values())


def test_past_its_size_limit_an_append_fails_saying_how_much_is_spooled_and_since_when(
        stack: Settings, topic: str, tmp_path: Path) -> None:
    async def run() -> tuple[list, str]:
        async with EventLog(_down(stack), topic=topic, spool_dir=tmp_path, spool_after=0.2,
                            spool_max_bytes=16_000) as log:
            spooled = []
            with pytest.raises(SpoolFull) as full:
                for conversation in (make_conversation(tools=3) for _ in range(100)):
                    for event in conversation:
                        spooled.append(await log.append(event))
            return spooled, str(full.value)

    spooled, message = asyncio.run(run())
    assert spooled and all(r.spooled for r in spooled)
    assert f"is full: {len(spooled)} events of " in message and " since 20" in message and "UTC" in message
    assert "AGENTLOG_SPOOL_MAX_BYTES" in message and "\n" not in message
    assert status(tmp_path).total.events == len(spooled)


def test_a_corrupt_tail_is_reported_set_aside_and_the_records_before_it_are_sent(
        stack: Settings, topic: str, tmp_path: Path) -> None:
    conversations = [make_conversation(tools=2) for _ in range(5)]
    _spool_while_down(stack, topic, tmp_path, conversations)
    [segment] = list(tmp_path.glob("*/*.log"))
    torn = Record(topic, b"conv-torn", b"x" * 300, 1, time.time()).encode()[:150]
    with open(segment, "ab") as file:  # a crash in the middle of writing one more record
        file.write(torn)
    found = status(tmp_path)
    assert found.total.events == sum(map(len, conversations))
    assert any("cut short" in p for d in found.directories for p in d.problems)
    report = agentlog("spool", "status", env={**env_of(replace(stack, events_topic=topic)),
                                              "AGENTLOG_SPOOL_DIR": str(tmp_path)})
    assert "cut short" in report.stdout

    _flush(stack, topic, tmp_path)
    assert sorted(e.event_id for e in _log_of(stack, topic)) == sorted(e.event_id for c in conversations for e in c)
    assert [p.read_bytes() for p in tmp_path.glob("*.corrupt")] == [torn]


def test_spool_files_are_hostile_input(stack: Settings, topic: str, tmp_path: Path) -> None:
    """What a spool file says is checked before anything is sent: a record that is not an event, or not the
    event it claims, is kept in failed.log; a length past any event is a corrupt tail (nothing is allocated for
    it); a spool directory other users may write is refused."""
    good = make_conversation(tools=1)
    codec = Codec()
    spool = Spool(tmp_path, max_bytes=1 << 20)
    now = time.time()
    records = [Record(topic, e.conversation_id.encode(), codec.encode(e), e.sequence_number, now) for e in good]
    impostor = make_conversation()[0]
    records.insert(1, Record(topic, b"conv-not-an-event", b"\xc3\x01 not avro at all", 1, now))
    records.insert(2, Record(topic, impostor.conversation_id.encode(), codec.encode(impostor), 7, now))
    spool.write(records)
    spool.close()
    [segment] = list(tmp_path.glob("*/*.log"))
    with open(segment, "ab") as file:
        file.write(HEAD.pack(0xFFFF_FFF0, 0) + b"claims four gigabytes")

    _flush(stack, topic, tmp_path)
    assert [e.event_id for e in _log_of(stack, topic)] == [e.event_id for e in good]
    assert status(tmp_path).failed == 2
    assert len(list(tmp_path.glob("*.corrupt"))) == 1

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(SpoolUnusable, match="may be written by other users") as refused:
        EventLog(stack, topic=topic, spool_dir=shared)
    assert "\n" not in str(refused.value)


def test_held_events_go_behind_each_other_when_the_producers_queue_is_full(stack: Settings, topic: str,
                                                                           tmp_path: Path) -> None:
    conversations = [make_conversation(tools=4) for _ in range(60)]

    async def run() -> list:
        async with EventLog(stack, topic=topic, spool_dir=tmp_path,
                            producer_config={"queue.buffering.max.messages": 25}) as log:
            return await asyncio.gather(*[log.append_nowait(e) for c in conversations for e in c])

    receipts = asyncio.run(run())
    assert any(r.spooled for r in receipts) and any(not r.spooled for r in receipts)
    order = defaultdict(list)
    for event in _log_of(stack, topic):
        order[event.conversation_id].append(event.sequence_number)
    assert {cid: seq for cid, seq in order.items()} == {c[0].conversation_id: [e.sequence_number for e in c]
                                                          for c in conversations}


def test_the_saga_orchestrator_does_not_go_on_after_a_spooled_transition_and_recovery_finishes_it(
        isolated: Settings, tmp_path: Path) -> None:
    services = Services(free_slots=3)

    async def start() -> None:
        async with EventLog(_down(isolated), spool_dir=tmp_path, spool_after=0.3, timeout=2) as log:
            conversation = Conversation(log, agent="sales-agent")
            await conversation.started("We'd like a demo next week")
            with pytest.raises(BrokerUnavailable, match="kept in the spool"):
                await Orchestrator().run(book_demo_meeting(services), conversation)

    asyncio.run(start())
    assert services.calls == []  # no step ran on a transition the log may not have

    async def recover() -> list:
        async with EventLog(isolated, spool_dir=tmp_path) as log:
            await log.flush(60)
            return await Orchestrator().recover(log, [book_demo_meeting(services)])

    [outcome] = asyncio.run(recover())
    assert outcome.status is SagaStatus.COMPLETED and services.calls


def test_an_event_sent_again_that_the_broker_already_had_is_applied_once_by_every_store(
        isolated: Settings, tmp_path: Path) -> None:
    """A crash after the broker took events and before the spool noted it: they are sent again."""
    conversations = [make_conversation(tools=3) for _ in range(30)]

    async def append() -> None:
        async with EventLog(isolated, spool_dir=tmp_path / "first") as log:
            await asyncio.gather(*(log.append(e) for c in conversations for e in c))

    asyncio.run(append())
    codec = Codec()
    spool = Spool(tmp_path / "again", max_bytes=1 << 20)
    again = [e for c in conversations[:10] for e in c]
    spool.write([Record(isolated.events_topic, e.conversation_id.encode(), codec.encode(e), e.sequence_number,
                        time.time()) for e in again])
    spool.close()
    _flush(isolated, isolated.events_topic, tmp_path / "again")
    events = sum(map(len, conversations))
    assert len(_log_of(isolated, isolated.events_topic)) == events + len(again)

    project(isolated)
    counts = store_counts(isolated)
    assert counts["archived"] == counts["ch_events"] == counts["ch_unique"] == events
    assert counts["views"] == counts["documents"] == 30
    assert counts["tool_called"] == counts["ch_tool_calls"] == counts["view_tools"] == 90


def test_the_spool_is_in_the_processs_metrics_and_simulate_reports_it_by_counts(
        stack: Settings, topic: str, tmp_path: Path) -> None:
    async def run() -> dict:
        log = EventLog(_down(stack), topic=topic, spool_dir=tmp_path, spool_after=0.2)
        await asyncio.gather(*(log.append(e) for _ in range(3) for e in make_conversation(tools=1)))
        time.sleep(0.3)
        found = {name: REGISTRY.get_sample_value(name, {"directory": str(tmp_path)})
                 for name in ("agentlog_spool_events", "agentlog_spool_conversations", "agentlog_spool_bytes")}
        found["spooled"] = REGISTRY.get_sample_value("agentlog_appends_total", {"outcome": "spooled"})
        await log.close()
        return found

    found = asyncio.run(run())
    assert found["agentlog_spool_events"] == 12 and found["agentlog_spool_conversations"] == 3
    assert found["agentlog_spool_bytes"] > 0 and found["spooled"] >= 12

    env = {**env_of(replace(stack, events_topic=topic)), "AGENTLOG_SPOOL_DIR": str(tmp_path / "cli"),
           "AGENTLOG_KAFKA_BOOTSTRAP": _down(stack).kafka_bootstrap}
    done = agentlog("simulate", "--conversations", "7", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["spooled"] == {"events": summary["events"], "conversations": 7}
    assert summary["acknowledged"]["events"] == summary["failed"]["events"] == 0
    said = agentlog("simulate", "--conversations", "2", env=env)
    assert "of 2 conversation(s) spooled" in said.stdout and "`agentlog spool status`" in said.stdout
    assert os.stat(next((tmp_path / "cli").iterdir())).st_mode & 0o777 == 0o700


def test_a_spool_left_that_cannot_be_read_is_reported_and_appends_go_on(stack: Settings, topic: str,
                                                                       tmp_path: Path, caplog) -> None:
    left = tmp_path / "0123456789abcdef0123456789abcdef"
    (left / "00000001.log").mkdir(parents=True)  # not a file: reading it fails

    events = make_conversation()

    async def run() -> list:
        async with EventLog(stack, topic=topic, spool_dir=tmp_path) as log:
            return await asyncio.wait_for(asyncio.gather(*(log.append(e) for e in events)), 30)

    assert len(asyncio.run(run())) == len(events)  # they were waiting (held) for the adoption, which failed
    assert any("cannot adopt" in r.getMessage() for r in caplog.records)
    assert [e.event_id for e in _log_of(stack, topic)] == [e.event_id for e in events]


def test_a_spool_left_for_another_cluster_is_left_alone_and_said_and_one_for_this_cluster_is_sent(
        stack: Settings, topic: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    codec = Codec()
    ours, theirs = make_conversation(tools=2), make_conversation(tools=2)

    async def learn() -> str:  # an EventLog names the cluster in its own directory once the broker says it
        async with EventLog(stack, topic=topic, spool_dir=tmp_path / "probe", spool_after=0.01,
                            producer_config={"queue.buffering.max.messages": 1}) as log:
            await asyncio.gather(*(log.append_nowait(e) for e in make_conversation(tools=3)))
            for _ in range(100):
                named = [d / "cluster" for d in (tmp_path / "probe").iterdir() if (d / "cluster").exists()]
                if named:
                    return named[0].read_text()
                await asyncio.sleep(0.05)
        raise AssertionError("no spool directory named its cluster")

    cluster = asyncio.run(learn())
    for name, conversation, written_for in (("this", ours, cluster), ("other", theirs, "another-cluster-id")):
        spool = Spool(tmp_path / "left", max_bytes=1 << 20)
        spool.write([Record(topic, e.conversation_id.encode(), codec.encode(e), e.sequence_number, time.time())
                     for e in conversation])
        directory = spool.directory
        spool.close()
        (directory / "cluster").write_text(written_for)
        if name == "other":
            left_alone = directory
    with caplog.at_level("ERROR"):
        _flush(stack, topic, tmp_path / "left")
    sent = {e.conversation_id for e in _log_of(stack, topic)}
    assert ours[0].conversation_id in sent and theirs[0].conversation_id not in sent
    assert left_alone.exists() and len(list(left_alone.glob("*.log"))) == 1
    [said] = [r.getMessage() for r in caplog.records if "another-cluster-id" in r.getMessage()]
    assert cluster in said and str(left_alone) in said
