"""The broker killed under a writing agent: nothing lost, nothing twice, every store equal to the log.

These tests SIGKILL the suite's own broker (and start it again): Kafka, as it is in production.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from agentlog.deploy.kafka import read_to_end
from agentlog.deploy.local.kafka import Kafka
from agentlog.deploy.settings import Settings
from agentlog.producers.spool.status import status
from agentlog.schemas import Codec
from tests.conftest import ROOT, agentlog, env_of
from tests.consumers.test_end_to_end import project, store_counts


@contextmanager
def broker_down(stack: Settings) -> Iterator[dict]:
    """The broker SIGKILLed on entry, started again on exit; yields {"restarted": seconds it took}."""
    kafka = Kafka(stack)
    pid = kafka.daemon.pid()
    assert pid is not None, "the suite's broker is not one the stack started: it cannot be killed here"
    os.killpg(pid, signal.SIGKILL)
    figures: dict = {}
    try:
        yield figures
    finally:
        started = time.monotonic()
        kafka.up()
        figures["restarted"] = time.monotonic() - started


def start_writer(settings: Settings, out: Path, spool: Path, *, rate: int, conversations: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.producers.spool_writer", str(out), "--rate", str(rate),
         "--conversations", str(conversations)],
        env={**os.environ, **env_of(settings), "AGENTLOG_SPOOL_DIR": str(spool)}, cwd=ROOT,
        start_new_session=True, stdout=subprocess.PIPE, stderr=open(out.with_suffix(".err"), "wb"), text=True)
    # its stderr to a file: a full pipe nobody reads until it stops would stop it


def _written(out: Path) -> list[tuple[str, int, str, str]]:
    """The writer's resolved appends (a line cut short by a kill is not one)."""
    return [row[:4] for row in written_with_time(out)]


def written_with_time(out: Path) -> list[tuple[str, int, str, str, int]]:
    """The writer's resolved appends with the milliseconds each took."""
    rows = []
    for line in out.read_text().split("\n"):
        parts = line.split(" ")
        if len(parts) == 5 and parts[4].isdigit():
            rows.append((parts[0], int(parts[1]), parts[2], parts[3], int(parts[4])))
    return rows


def _the_log(settings: Settings) -> list:
    codec = Codec()
    return [codec.decode(m.value()) for m in read_to_end(settings, settings.events_topic)]


def _orders(log: list) -> dict[str, list[int]]:
    """Each conversation's sequence numbers in log order (one conversation is one partition)."""
    found: dict[str, list[int]] = defaultdict(list)
    for event in log:
        found[event.conversation_id].append(event.sequence_number)
    return found


def _wait_for_empty(spool: Path, *, timeout: float) -> bool:
    """Until the writer's spool holds nothing (its own figures, rewritten each second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(spool).total.events == 0:
            return True
        time.sleep(0.25)
    return False


@pytest.mark.slow
def test_a_broker_killed_for_60s_under_1000_events_per_s_loses_nothing(isolated: Settings, tmp_path: Path) -> None:
    out = tmp_path / "written"
    writer = start_writer(isolated, out, tmp_path / "spool", rate=1000, conversations=200)
    try:
        time.sleep(8)
        before = len(_written(out))
        with broker_down(isolated) as broker:
            time.sleep(60)
            during = len(_written(out))
        back, while_down = time.monotonic(), len(_written(out)) - before
        drained = _wait_for_empty(tmp_path / "spool", timeout=120)
        drain = time.monotonic() - back
        time.sleep(5)
        out.with_suffix(".stop").touch()
        stdout, _ = writer.communicate(timeout=300)
    finally:
        writer.kill()
    assert writer.returncode == 0, out.with_suffix(".err").read_text(errors="replace")[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    written = _written(out)
    spooled = [row for row in written if row[3] == "spool"]
    assert not summary["failures"] and summary["events"] == len(written)
    assert drained, "the spool was not sent within 2 minutes of the broker's return"
    assert during - before > 50_000  # the agent went on writing, about 1,000 events/s, with the broker dead
    assert len(spooled) > 50_000

    log = _the_log(isolated)
    ids = [e.event_id for e in log]
    assert len(ids) == len(set(ids)), "an event is in the log twice"
    assert sorted(ids) == sorted(row[2] for row in written), "the log is not exactly what the agent recorded"
    for conversation, sequence in _orders(log).items():
        assert sequence == list(range(1, len(sequence) + 1)), f"{conversation} is out of order or has a gap"

    applied = project(isolated)
    counts = store_counts(isolated)
    conversations = len(_orders(log))
    assert {name: s.events for name, s in applied.items()} == {name: len(log) for name in applied}
    assert counts["archived"] == counts["ch_events"] == counts["ch_unique"] == len(log)
    assert counts["views"] == counts["documents"] == conversations
    print(f"\noutage: {len(written):,} events in {summary['seconds']}s; {while_down:,} written while the broker was "
          f"down ({during - before:,} in the 60s it was dead, then {broker['restarted']:.0f}s to start again); "
          f"{len(spooled):,} spooled, all sent {drain:.1f}s after the broker was back; in the log {len(log):,} "
          f"({conversations:,} conversations); dashboard {counts['archived']:,}, search {counts['documents']:,} "
          f"documents, analytics {counts['ch_events']:,}")


def test_a_writer_killed_while_the_broker_is_down_leaves_a_spool_the_next_process_sends(
        isolated: Settings, tmp_path: Path) -> None:
    out, spool = tmp_path / "written", tmp_path / "spool"
    writer = start_writer(isolated, out, spool, rate=400, conversations=40)
    try:
        time.sleep(5)
        with broker_down(isolated):
            time.sleep(8)
            os.killpg(writer.pid, signal.SIGKILL)
            writer.wait()
        written = _written(out)
        spooled = [row for row in written if row[3] == "spool"]
        assert len(spooled) > 1000
    finally:
        writer.kill()
    env = {**env_of(isolated), "AGENTLOG_SPOOL_DIR": str(spool)}
    left = json.loads(agentlog("spool", "status", "--json", env=env).stdout)
    assert left["events"] >= len(spooled) and not any(d["live"] for d in left["directories"])

    flushed = agentlog("spool", "flush", env=env)
    assert flushed.returncode == 0, flushed.stderr
    assert f"sent {left['events']:,} of the {left['events']:,}" in flushed.stdout
    assert json.loads(agentlog("spool", "status", "--json", env=env).stdout)["events"] == 0

    log = _the_log(isolated)
    assert {row[2] for row in written} <= {e.event_id for e in log}, "an event the agent was told is durable is lost"
    distinct = {(e.conversation_id, e.sequence_number) for e in log}
    for conversation, sequence in _orders(log).items():
        firsts = list(dict.fromkeys(sequence))
        assert firsts == list(range(1, len(firsts) + 1)), f"{conversation} is out of order or has a gap"
    project(isolated)
    counts = store_counts(isolated)
    assert counts["archived"] == counts["ch_events"] == counts["ch_unique"] == len(distinct)
    assert counts["views"] == counts["documents"] == len({c for c, _ in distinct})
