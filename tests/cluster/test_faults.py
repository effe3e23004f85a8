"""Node faults on the three-node stack, under an agent writing about 1,000 events/s while the three projections
run (dashboard and search in two processes each): nothing lost, nothing doubled, every store exact.

Each test reads the log back with a consumer of its own (every event the agent was told is durable is there,
once, in order; nothing dead-lettered) and runs ``agentlog verify``; its figures go to
test-artifacts/cluster-faults.json.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, TypeVar

import pytest
from elasticsearch import NotFoundError

from agentlog.consumers.runtime import group_for
from agentlog.deploy import clients, kafka
from agentlog.deploy.credentials import KafkaPrincipal, SearchUser
from agentlog.deploy.local.elasticsearch import Elasticsearch
from agentlog.deploy.local.kafka import Kafka
from agentlog.deploy.local.kafka import Node as Broker
from agentlog.deploy.settings import Settings
from tests.cluster.conftest import Cluster, Load, record
from tests.conftest import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

WARM = 6.0
"""Seconds of load before a fault: the projectors have joined and are applying."""
AFTER = 4.0
"""Seconds of load after a fault is over."""
T = TypeVar("T")


def _wait(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _partitions(world: Settings) -> list:
    metadata = kafka.admin(world).list_topics(world.events_topic, timeout=5)
    return list(metadata.topics[world.events_topic].partitions.values())


def _leaders(world: Settings) -> Counter[int]:
    return Counter(partition.leader for partition in _partitions(world))


def _broker(cluster: Cluster, node_id: int) -> Broker:
    return next(node for node in Kafka(cluster.settings).nodes if node.id == node_id)


def _pid(daemon) -> int:
    pid = daemon.pid()
    assert pid is not None, f"{daemon.name} is not running"
    return pid


def _moved_off(world: Settings, broker: int, since: float) -> float:
    """Seconds from ``since`` until no partition of the events topic is led by ``broker`` (it is fenced)."""
    _wait(lambda: all(p.leader not in (broker, -1) for p in _partitions(world)), 60,
          f"the partitions led by broker {broker} to move")
    return round(time.monotonic() - since, 1)


def _in_sync(world: Settings, timeout: float = 90) -> float:
    started = time.monotonic()
    _wait(lambda: all(len(p.isrs) == 3 for p in _partitions(world)), timeout, "every replica back in sync",
          interval=0.5)
    return round(time.monotonic() - started, 1)


def _restart_kafka(cluster: Cluster) -> float:
    """``stack up``'s way: start the node that is down and wait until it has rejoined."""
    started = time.monotonic()
    cluster.stack.up()
    return round(time.monotonic() - started, 1)


def _controller(cluster: Cluster) -> int | None:
    return next((int(str(n["id"])) for n in Kafka(cluster.settings).status().nodes
                 if "controller" in n["leads"]), None)  # type: ignore[operator]


def test_the_broker_leading_the_most_partitions_killed_then_restarted(cluster: Cluster, load: Load) -> None:
    load.start()
    time.sleep(WARM)
    victim, led = _leaders(load.world).most_common(1)[0]
    killed = time.monotonic()
    os.killpg(_pid(_broker(cluster, victim).daemon), signal.SIGKILL)
    fenced = _moved_off(load.world, victim, killed)
    time.sleep(10)
    restart = _restart_kafka(cluster)
    rejoined = _in_sync(load.world)
    recovered = time.monotonic()
    time.sleep(AFTER)
    figures = load.finish(recovered)
    figures.update(broker=victim, partitions_led=led, leaders_moved_s=fenced, restart_s=restart,
                   back_in_sync_s=rejoined)
    record("kill the busiest broker", figures)


def test_the_active_controller_killed_then_restarted(cluster: Cluster, load: Load) -> None:
    load.start()
    time.sleep(WARM)
    victim = _controller(cluster)
    assert victim is not None, "no node says it is the active controller"
    killed = time.monotonic()
    os.killpg(_pid(_broker(cluster, victim).daemon), signal.SIGKILL)
    successor = _wait(lambda: (lambda c: c if c not in (None, victim) else None)(_controller(cluster)), 60,
                      "another controller")
    elected = round(time.monotonic() - killed, 1)
    fenced = _moved_off(load.world, victim, killed)
    time.sleep(5)
    restart = _restart_kafka(cluster)
    _in_sync(load.world)
    recovered = time.monotonic()
    time.sleep(AFTER)
    figures = load.finish(recovered)
    figures.update(controller=victim, successor=successor, new_controller_s=elected, leaders_moved_s=fenced,
                   restart_s=restart)
    record("kill the active controller", figures)


def test_a_broker_hung_for_30s_then_resumed(cluster: Cluster, load: Load) -> None:
    load.start()
    time.sleep(WARM)
    victim, led = _leaders(load.world).most_common(1)[0]
    pid = _pid(_broker(cluster, victim).daemon)
    stopped = time.monotonic()
    os.killpg(pid, signal.SIGSTOP)
    try:
        fenced = _moved_off(load.world, victim, stopped)
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
    finally:
        os.killpg(pid, signal.SIGCONT)
    rejoined = _in_sync(load.world)
    recovered = time.monotonic()
    time.sleep(AFTER)
    figures = load.finish(recovered)
    figures.update(broker=victim, partitions_led=led, leaders_moved_s=fenced, back_in_sync_after_resume_s=rejoined)
    record("hang a broker for 30 s", figures)


def test_a_rolling_restart_of_every_broker_under_load(cluster: Cluster, load: Load) -> None:
    load.start()
    time.sleep(WARM)
    each = {}
    for node in Kafka(cluster.settings).nodes:
        started = time.monotonic()
        node.daemon.stop(timeout=60)  # SIGTERM: a controlled shutdown hands its leaderships over first
        _restart_kafka(cluster)
        _in_sync(load.world)
        each[node.id] = round(time.monotonic() - started, 1)
    recovered = time.monotonic()
    time.sleep(AFTER)
    figures = load.finish(recovered)
    figures.update(seconds_per_broker=each)
    record("rolling restart of the brokers", figures)


def _primaries(world: Settings) -> Counter[str]:
    es = clients.elasticsearch(world, user=SearchUser.ADMIN)
    try:
        rows = es.cat.shards(index=world.search_alias, format="json", h="prirep,node,state").body
    except NotFoundError:  # the projector has not made its index yet
        return Counter()
    finally:
        es.close()
    return Counter(str(row["node"]) for row in rows if row["prirep"] == "p" and row["state"] == "STARTED")


def _green(world: Settings) -> float:
    started = time.monotonic()
    es = clients.elasticsearch(world, user=SearchUser.ADMIN, timeout=150)
    try:
        health = es.cluster.health(wait_for_status="green", wait_for_nodes="3", timeout="120s")
    finally:
        es.close()
    assert health["status"] == "green", health
    return round(time.monotonic() - started, 1)


def test_the_search_node_holding_the_most_primaries_killed_mid_projection(cluster: Cluster, load: Load) -> None:
    load.start()
    time.sleep(WARM)
    holder, held = _wait(lambda: next(iter(_primaries(load.world).most_common(1)), None), 30, "a started primary")
    _green(load.world)  # its replica started too: the index's one copy besides the primary
    node = next(n for n in Elasticsearch(cluster.settings).nodes if n.name == holder)
    killed = time.monotonic()
    os.killpg(_pid(node.daemon), signal.SIGKILL)
    promoted = _wait(lambda: (lambda p: p if p and holder not in p else None)(_primaries(load.world)), 60,
                     "a replica promoted")
    promoted_s = round(time.monotonic() - killed, 1)
    time.sleep(10)
    load.stop_writer()  # the node starts again with the projectors still applying what was written
    started = time.monotonic()
    Elasticsearch(cluster.settings).up()
    rejoin = round(time.monotonic() - started, 1)
    green = _green(load.world)
    recovered = time.monotonic()
    time.sleep(AFTER)
    figures = load.finish(recovered)
    assert figures["restarts"] == {"dashboard": 0, "search": 0, "analytics": 0}, "a projector crashed"
    figures.update(node=holder, primaries=held, new_primary_on=sorted(promoted), replica_promoted_s=promoted_s,
                   rejoin_s=rejoin, green_again_s=green)
    record("kill the search node with the most primaries", figures)


def _group(world: Settings, name: str) -> list[tuple[str, set[int]]]:
    """Each member of a projection's consumer group: its client id (which names its pid) and partitions."""
    group = group_for(name, world.events_topic)
    admin = kafka.admin(world, principal=KafkaPrincipal.READER)
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=10)
    return [(m.client_id, {p.partition for p in m.assignment.topic_partitions}) for m in described.members]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie no one reaped yet runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _reassigned(world: Settings, name: str, dead: int) -> bool:
    members = _group(world, name)
    held = set().union(*(partitions for _, partitions in members)) if members else set()
    return held == set(range(world.partitions)) and not any(f"-{dead}-" in client for client, _ in members)


def test_one_projector_process_of_each_projection_killed(cluster: Cluster, load: Load) -> None:
    load.start()
    _wait(lambda: all(len(_group(load.world, name)) == 2 for name in ("dashboard", "search")), 60,
          "two members in the dashboard's and the search's groups")
    time.sleep(WARM)
    moved = {}
    for name in ("dashboard", "search"):
        victim = _children(load.projectors[name].pid)[0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        _wait(lambda name=name, victim=victim: _reassigned(load.world, name, victim), 60,
              f"{name}'s partitions to leave process {victim}")
        moved[name] = round(time.monotonic() - killed, 1)
    # the embedded ClickHouse takes one writer process: its projector killed and started again stands in
    os.killpg(load.projectors["analytics"].pid, signal.SIGKILL)
    load.projectors["analytics"].wait(30)
    load.projectors["analytics"] = subprocess.Popen(
        [sys.executable, "-m", "agentlog.consumers.cli", "project", "--only", "analytics"], env=load.env, cwd=ROOT,
        stdout=open(load.directory / "analytics.out", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    recovered = time.monotonic()
    time.sleep(AFTER)
    figures = load.finish(recovered)
    assert figures["restarts"]["dashboard"] >= 1 and figures["restarts"]["search"] >= 1  # type: ignore[index]
    figures.update(partitions_reassigned_s=moved)
    record("kill a projector process of each projection", figures)


def test_no_projector_process_outlives_its_killed_supervisor(cluster: Cluster, load: Load) -> None:
    load.start()
    time.sleep(WARM)
    gone = {}
    for name in ("dashboard", "search"):
        supervisor = load.projectors[name]
        children = _children(supervisor.pid)
        assert len(children) == 2, children
        killed = time.monotonic()
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(10)
        _wait(lambda children=children: not any(_alive(child) for child in children), 40,
              f"{name}'s projector processes to leave after their supervisor was killed")
        gone[name] = round(time.monotonic() - killed, 1)
        load.projectors[name] = subprocess.Popen(
            [sys.executable, "-m", "agentlog.consumers.cli", "project", "--only", name, "--processes", "2"],
            env=load.env, cwd=ROOT, stdout=open(load.directory / f"{name}.out", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
    recovered = time.monotonic()
    time.sleep(AFTER)
    figures = load.finish(recovered)
    figures.update(children_gone_s=gone)
    record("kill the supervisor", figures)
