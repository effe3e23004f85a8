"""A three-node stack of its own (three Kafka brokers, three Elasticsearch nodes, one Postgres, one embedded
ClickHouse) on ports beside the suite's stack, brought up once for the cluster tests and purged after them;
and the load those tests put on it: an agent writing about 1,000 events/s and the three projections, dashboard
and search in two processes each."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from agentlog.consumers.runtime.lag import lag
from agentlog.deploy.credentials import KafkaPrincipal
from agentlog.deploy.kafka import read_to_end, watermarks
from agentlog.deploy.local.stack import Stack
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import Settings
from agentlog.projections.registry import NAMES
from agentlog.schemas import Codec
from tests.conftest import ROOT, env_of
from tests.producers.test_outage import written_with_time

PORTS = {"AGENTLOG_KAFKA_BOOTSTRAP": "127.0.0.1:19092", "AGENTLOG_ELASTICSEARCH_URL": "https://127.0.0.1:19200",
         "AGENTLOG_POSTGRES_DSN": "postgresql://agentlog@127.0.0.1:15432/agentlog"}
"""The cluster's first node of each service (the next Kafka node is 2 ports on, the next Elasticsearch node 1)."""
FIGURES = ROOT / "test-artifacts" / "cluster-faults.json"
PROCESSES = {"dashboard": 2, "search": 2, "analytics": 1}
"""The projections' processes under load. The embedded ClickHouse takes one writer process: its projector
runs alone, its engine holding the store (a ClickHouse server through AGENTLOG_CLICKHOUSE_URL takes more)."""


@dataclass
class Cluster:
    settings: Settings
    env: dict[str, str]
    """The environment of a process that talks to the cluster (none of the suite's stack's variables)."""
    stack: Stack
    up_seconds: float


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    directory = Path(tempfile.mkdtemp(prefix="agentlog-cluster-"))
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("AGENTLOG_") or name == "AGENTLOG_SPOOL_DIR"}
    env.update(PORTS, AGENTLOG_STACK_DIR=str(directory), AGENTLOG_STACK_NODES="3")
    settings = Settings.from_env(env)
    stack = Stack(settings)
    started = time.monotonic()
    try:
        stack.up()
        yield Cluster(settings, env, stack, time.monotonic() - started)
    finally:
        stack.down(purge=True)


@pytest.fixture
def world(cluster: Cluster, unique: str) -> Iterator[Settings]:
    own = private(cluster.settings, unique)
    yield own
    drop(own)


@dataclass
class Load:
    """The writer and the projectors on one world of the cluster, and what they did."""

    cluster: Cluster
    world: Settings
    directory: Path
    writer: subprocess.Popen | None = None
    projectors: dict[str, subprocess.Popen] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)
    summary: dict[str, object] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**self.cluster.env, **env_of(self.world), "AGENTLOG_SPOOL_DIR": str(self.directory / "spool")}

    @property
    def out(self) -> Path:
        return self.directory / "written"

    def start(self, *, rate: int = 1000) -> "Load":
        for name in NAMES:
            extra = ["--processes", str(PROCESSES[name])] if PROCESSES[name] > 1 else []
            log = open(self.directory / f"{name}.out", "wb")
            self.projectors[name] = subprocess.Popen(
                [sys.executable, "-m", "agentlog.consumers.cli", "project", "--only", name, *extra], env=self.env,
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.writer = subprocess.Popen(  # its stderr to a file: a full pipe nobody reads would stop it
            [sys.executable, "-m", "tests.producers.spool_writer", str(self.out), "--rate", str(rate),
             "--conversations", "100"], env=self.env, cwd=ROOT, start_new_session=True,
            stdout=subprocess.PIPE, stderr=open(self.directory / "writer.err", "wb"), text=True)
        return self

    def written(self) -> int:
        return len(written_with_time(self.out)) if self.out.exists() else 0

    def stop_writer(self) -> dict[str, object]:
        """Tell the writer to stop; it flushes (the spool too) and says what it did."""
        assert self.writer is not None
        if self.summary is None:
            self.out.with_suffix(".stop").touch()
            try:
                stdout, _ = self.writer.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                os.killpg(self.writer.pid, signal.SIGABRT)  # it prints every thread's stack
                self.writer.communicate(timeout=30)
                raise AssertionError(f"the writer did not stop within 240 s:\n{self._writer_said()}") from None
            assert self.writer.returncode == 0, self._writer_said()
            self.summary = json.loads(stdout.strip().splitlines()[-1])
        return self.summary

    def _writer_said(self) -> str:
        return (self.directory / "writer.err").read_text(errors="replace")[-6000:]

    def finish(self, recovered: float) -> dict[str, object]:
        """Stop the writer (it flushes), wait until every projection has applied the whole log, stop them,
        then check: the log holds every acknowledged event once, in order, nothing dead-lettered, and
        ``agentlog verify`` passes. Returns the figures; ``recovered``: when the fault ended (monotonic)."""
        summary = self.stop_writer()
        assert not summary["failures"], summary["failures"]
        rows = written_with_time(self.out)
        assert summary["events"] == len(rows)
        caught_up = self._caught_up(timeout=240)
        reports = self._stop_projectors()
        codec = Codec()
        log = [codec.decode(m.value()) for m in read_to_end(self.world, self.world.events_topic)]
        ids = [event.event_id for event in log]
        assert len(ids) == len(set(ids)), "an event is in the log twice"
        assert sorted(ids) == sorted(row[2] for row in rows), "the log is not exactly what the agent was told"
        orders: dict[str, list[int]] = {}
        for event in log:
            orders.setdefault(event.conversation_id, []).append(event.sequence_number)
        for conversation, sequence in orders.items():
            assert sequence == list(range(1, len(sequence) + 1)), f"{conversation} is out of order or has a gap"
        dead = sum(high - low for low, high in
                   watermarks(self.world, self.world.dlq_topic, principal=KafkaPrincipal.ADMIN).values())
        assert not dead, f"{dead} dead letters"
        checked = subprocess.run([sys.executable, "-m", "agentlog.consumers.cli", "verify", "--json"], env=self.env,
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
        verified = json.loads(checked.stdout)
        stall = max(row[4] for row in rows)
        self.figures.update({
            "events": len(log), "conversations": len(orders), "spooled": sum(row[3] == "spool" for row in rows),
            "rate": round(summary["rate"]), "longest_append_ms": stall,
            "catch_up_s": round(caught_up - recovered, 1), "verified": {r["store"]: r["checked"] for r in
                                                                        verified["stores"]},
            "restarts": reports})
        return self.figures

    def _caught_up(self, *, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = lag(self.world, list(NAMES))
            if all(sum(partitions.values()) == 0 for partitions in behind.values()):
                return time.monotonic()
            for name, process in self.projectors.items():
                assert process.poll() is None, f"the {name} projector exited: {self._output(name)}"
            time.sleep(0.5)
        raise AssertionError(f"the projections did not catch up in {timeout:.0f}s: {behind}")

    def _output(self, name: str) -> str:
        return (self.directory / f"{name}.out").read_text(errors="replace")[-3000:]

    def _stop_projectors(self) -> dict[str, int]:
        """SIGTERM each ``project`` (it stops its processes); returns each projection's process restarts."""
        for process in self.projectors.values():
            process.send_signal(signal.SIGTERM)
        restarts = {}
        for name, process in self.projectors.items():
            process.wait(timeout=90)
            found = re.search(rf"^{name}: .*, (\d+) restarts \(", self._output(name), re.M)
            restarts[name] = int(found.group(1)) if found else 0
        return restarts

    def kill(self) -> None:
        for process in [self.writer, *self.projectors.values()]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def load(cluster: Cluster, world: Settings, tmp_path: Path) -> Iterator[Load]:
    running = Load(cluster, world, tmp_path)
    yield running
    running.kill()


def record(name: str, figures: dict[str, object]) -> None:
    """Keep a test's figures in test-artifacts/cluster-faults.json (for the record) and print them."""
    FIGURES.parent.mkdir(exist_ok=True)
    kept = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    kept[name] = figures
    FIGURES.write_text(json.dumps(kept, indent=2))
    print(f"\n{name}: {json.dumps(figures)}")
