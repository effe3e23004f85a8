"""Every projection in a process of its own, supervised: a projector process SIGKILLed under ``agentlog serve``
shows as down, comes back and the stores stay exact; ``--processes 2`` splits a projection's partitions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.projections.dashboard import connect
from tests.conftest import ROOT, env_of
from tests.consumers.test_end_to_end import fill, store_counts
from tests.consumers.web.conftest import free_port


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


def _archived(settings: Settings) -> int:
    with connect(settings, role=PostgresRole.OWNER) as conn:
        (count,) = conn.execute("SELECT count(*) FROM agent_events").fetchone()
    return count


def _health(url: str, token: str) -> dict:
    request = urllib.request.Request(f"{url}/api/health", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["projectors"]


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_projector_process_killed_under_serve_comes_back_and_the_stores_stay_exact(isolated: Settings,
                                                                                    tmp_path: Path) -> None:
    world = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse")
    env = {**os.environ, **env_of(world), "AGENTLOG_SPOOL_DIR": str(tmp_path / "spool")}
    auth = AuthStore(world)
    auth.setup()
    _, token = auth.create_token("operator", name="supervision")
    first = fill(world, 300, seed=11)
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "serve", "--port", str(port)],
                             env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _health(url, token)["dashboard"]["events"] >= first["events"], 120, "the first events")
        children = _children(serve.pid)
        dashboard = [pid for pid, command in children.items() if "project --only dashboard" in command]
        assert len(dashboard) == 1 and all(any(f"project --only {name}" in c for c in children.values())
                                           for name in ("search", "analytics"))  # the embedded store's too
        os.kill(dashboard[0], signal.SIGKILL)
        down = _wait(lambda: (lambda h: h if not h["dashboard"]["running"] else None)(_health(url, token)), 10,
                     "the dashboard to show as down")
        assert "exited with -9" in down["dashboard"]["error"]
        more = fill(world, 200, seed=12)
        back = _wait(lambda: (lambda h: h if h["dashboard"]["running"] and h["dashboard"]["restarts"] >= 1 else None)(
            _health(url, token)), 30, "the dashboard to come back")
        assert back["dashboard"]["processes"] == 1 and back["dashboard"]["last_exit"] == -9
        assert [pid for pid, c in _children(serve.pid).items() if "project --only dashboard" in c] != dashboard
        total = first["events"] + more["events"]
        _wait(lambda: _archived(world) == total, 120, "the dashboard to catch up")
        _wait(lambda: all(_health(url, token)[n]["events"] >= total for n in ("search", "analytics")), 120,
              "search and analytics to catch up")
    finally:
        serve.terminate()
        serve.wait(60)
    counts = store_counts(world)
    assert counts["archived"] == counts["ch_events"] == counts["ch_unique"] == total
    assert counts["views"] == counts["documents"] == first["conversations"] + more["conversations"]
    assert not _children(serve.pid), "no projector process outlives serve"


def _members(settings: Settings, group: str) -> list[set[int]]:
    """The partitions each member of a consumer group is assigned now."""
    from agentlog.deploy import kafka
    from agentlog.deploy.credentials import KafkaPrincipal
    client = kafka.admin(settings, principal=KafkaPrincipal.READER)
    described = client.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=10)
    return [{p.partition for p in m.assignment.topic_partitions} for m in described.members]


@pytest.mark.slow
def test_two_processes_of_one_projection_split_its_partitions_and_stay_exact(isolated: Settings,
                                                                            tmp_path: Path) -> None:
    from agentlog.consumers.runtime import group_for
    world = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse", batch_size=200)
    env = {**os.environ, **env_of(world)}
    log = (tmp_path / "project.log").open("w")
    project = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "project", "--only", "dashboard",
                                "--processes", "2"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        group = group_for("dashboard", world.events_topic)
        split = _wait(lambda: (lambda m: m if len(m) == 2 and all(m) else None)(_members(world, group)), 60,
                      "two members with partitions each")
        assert split[0] | split[1] == set(range(world.partitions)) and not split[0] & split[1]
        summary = fill(world, 1000, seed=5)
        _wait(lambda: _archived(world) == summary["events"], 120, "the dashboard to catch up")
    finally:
        project.terminate()
        project.wait(60)
    assert project.returncode == 0, (tmp_path / "project.log").read_text()
    line = next(line for line in (tmp_path / "project.log").read_text().splitlines()
                if line.startswith("dashboard: 2 processes"))
    members = [int(n) for n in line.split("(")[1].split(")")[0].split(" + ")]
    assert all(n > 0 for n in members), line  # each member applied its share
    with connect(world, role=PostgresRole.OWNER) as conn:
        archived, distinct = conn.execute("SELECT count(*), count(DISTINCT (conversation_id, sequence_number)) "
                                          "FROM agent_events").fetchone()
        (views,) = conn.execute("SELECT count(*) FROM conversation_views").fetchone()
    assert archived == distinct == summary["events"] and views == summary["conversations"]


def test_a_projector_process_that_keeps_dying_shows_as_down_and_is_restarted_with_growing_backoff(tmp_path) -> None:
    from prometheus_client import REGISTRY

    from agentlog.consumers.runtime.supervisor import Supervisor

    class Failing(Supervisor):
        def command(self, child):
            return [sys.executable, "-c", "import sys; sys.exit(3)"]

    supervisor = Failing(["dashboard"], directory=tmp_path)
    supervisor.start()
    try:
        # two restarts, and the process of the second has died too (just after a restart, one is starting)
        state = _wait(lambda: (lambda s: s if s["restarts"] >= 2 and s["processes"] == 0 else None)(
            supervisor.status()["dashboard"]), 20, "two restarts")
        assert state["running"] is False and state["processes"] == 0 and state["last_exit"] == 3
        assert "exited with 3; starting again in" in state["error"]
        assert REGISTRY.get_sample_value("agentlog_projector_up", {"projection": "dashboard"}) == 0
        child = supervisor.children[0]
        assert child.backoff >= 4  # 1, 2, 4 …: a process that cannot start does not spin
    finally:
        supervisor.terminate()


def test_a_run_to_the_end_of_the_log_gives_up_on_a_process_that_keeps_failing(tmp_path) -> None:
    from agentlog.consumers.runtime.supervisor import CAUGHT_UP_RESTARTS, Supervisor

    class Failing(Supervisor):
        def command(self, child):
            return [sys.executable, "-c", "import sys; sys.exit(3)"]

    supervisor = Failing(["search"], until_caught_up=True, directory=tmp_path / "status")
    supervisor.start()
    try:
        _wait(lambda: not supervisor.running(), 30, "the supervisor to give up")
        assert [c.restarts for c in supervisor.children] == [CAUGHT_UP_RESTARTS]
        assert [c.last_exit for c in supervisor.failed()] == [3]
    finally:
        supervisor.terminate()
    assert not (tmp_path / "status").exists()


def test_a_child_whose_supervisor_died_before_it_could_ask_to_die_with_it_leaves_at_once() -> None:
    """The window between the fork and PR_SET_PDEATHSIG: a parent gone by then sends no signal, so the child
    looks at its parent itself (here it is told of one that is not its parent, as a dead one would not be)."""
    from agentlog.consumers.runtime.supervisor import _die_with

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=_die_with(1))
    try:
        assert child.wait(10) == 75
    finally:
        child.kill()


def test_a_supervised_projector_leaves_when_its_supervisor_is_gone(tmp_path: Path) -> None:
    """The child's own watch: started under a supervisor pid that is not its parent, ``project`` leaves."""
    child = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "project", "--only", "dashboard",
                              "--status-file", str(tmp_path / "status")],
                             env={**os.environ, "AGENTLOG_SUPERVISOR_PID": "1"}, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert child.wait(30) == 75
    finally:
        child.kill()
