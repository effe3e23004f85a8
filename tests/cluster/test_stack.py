"""The three-node stack from the command line: every node listed with what it leads, the whole bootstrap list,
a killed node started again by ``stack up``, which returns once it has rejoined."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from agentlog.deploy.local.kafka import Kafka
from tests.cluster.conftest import Cluster
from tests.conftest import agentlog

pytestmark = [pytest.mark.cluster]


def _status(cluster: Cluster) -> dict:
    done = agentlog("stack", "status", "--json", env=cluster.env)
    return json.loads(done.stdout)


def test_status_lists_every_node_and_the_one_that_leads(cluster: Cluster) -> None:
    status = _status(cluster)
    for service, role in (("kafka", "controller"), ("elasticsearch", "master")):
        nodes = status[service]["nodes"]
        assert [node["id"] for node in nodes] == [1, 2, 3] and all(node["healthy"] and node["pid"] for node in nodes)
        assert sum(role in node["leads"] for node in nodes) == 1, nodes
        assert len({node["address"] for node in nodes}) == 3


def test_env_prints_the_whole_bootstrap_list(cluster: Cluster) -> None:
    said = agentlog("stack", "env", "--role", "search", env=cluster.env).stdout
    assert "AGENTLOG_KAFKA_BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096" in said
    assert ("AGENTLOG_ELASTICSEARCH_URL=https://127.0.0.1:19200,https://127.0.0.1:19201,https://127.0.0.1:19202"
            in said)


def test_stack_up_starts_a_killed_broker_again_and_returns_once_it_has_rejoined(cluster: Cluster) -> None:
    node = Kafka(cluster.settings).nodes[1]
    old = node.daemon.pid()
    assert old is not None
    os.killpg(old, signal.SIGKILL)
    time.sleep(0.5)
    assert not next(n for n in _status(cluster)["kafka"]["nodes"] if n["id"] == node.id)["healthy"]
    done = agentlog("stack", "up", env=cluster.env)
    assert done.returncode == 0, done.stdout + done.stderr
    back = next(n for n in _status(cluster)["kafka"]["nodes"] if n["id"] == node.id)
    assert back["healthy"] and back["pid"] not in (None, old)


def test_a_three_node_stack_asked_to_be_one_says_so(cluster: Cluster) -> None:
    done = agentlog("stack", "up", "--nodes", "1", env=cluster.env)
    said = (done.stdout + done.stderr).strip()
    assert done.returncode != 0 and "three-node cluster, not a one-node stack" in said, said
