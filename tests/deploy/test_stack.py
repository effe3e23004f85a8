"""`agentlog stack`: idempotent up, down reported as down, bad addresses as one clear line."""

from __future__ import annotations

import json
import socket
from dataclasses import replace

import pytest

from agentlog.deploy.local.kafka import Kafka
from agentlog.deploy.local.postgres import Postgres
from agentlog.deploy.settings import Settings
from tests.conftest import agentlog


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stack_up_twice_is_a_no_op_the_second_time(stack: Settings) -> None:
    before = json.loads(agentlog("stack", "status", "--json").stdout)
    pids = {name: (stack.stack_dir / name / f"{name}.pid").read_text() for name in ("kafka", "elasticsearch")
            if before[name]["managed"]}
    again = agentlog("stack", "up")
    assert again.returncode == 0, again.stderr
    after = json.loads(agentlog("stack", "status", "--json").stdout)
    assert {name: (stack.stack_dir / name / f"{name}.pid").read_text() for name in pids} == pids
    assert all(service["healthy"] for service in after.values())
    assert {n: s["version"] for n, s in after.items()} == {n: s["version"] for n, s in before.items()}


def test_status_json_shows_every_service_healthy_with_its_version(stack: Settings) -> None:
    done = agentlog("stack", "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert set(status) == {"kafka", "postgres", "elasticsearch", "clickhouse"}
    for service in status.values():
        assert service["healthy"] is True
        assert service["version"] or (service["name"] == "kafka" and not service["managed"])  # brokers don't say
    assert status["elasticsearch"]["version"].split(".")[0] == "9"
    if status["kafka"]["managed"]:
        assert status["kafka"]["version"].split(".")[0] == "4"


@pytest.mark.slow
def test_a_second_stack_comes_up_and_reports_down_after_down(stack: Settings, tmp_path) -> None:
    """A private Kafka and Postgres on free ports: up, healthy, down, reported down."""
    kafka_port, pg_port = _free_port(), _free_port()
    own = replace(stack, stack_dir=tmp_path / "stack", kafka_bootstrap=f"127.0.0.1:{kafka_port}",
                  postgres_dsn=f"postgresql://agentlog@127.0.0.1:{pg_port}/agentlog")
    services = [Kafka(own), Postgres(own)]
    try:
        for service in services:
            assert service.up().healthy
    finally:
        stopped = [service.down() for service in services]
    assert stopped == [True, True]
    assert [service.status().healthy for service in services] == [False, False]
    assert [service.status().detail for service in services] == ["not answering", "not answering"]


@pytest.mark.parametrize("variable, value, service", [
    ("AGENTLOG_KAFKA_BOOTSTRAP", "127.0.0.1:99999", "kafka"),
    ("AGENTLOG_POSTGRES_DSN", "postgresql://agentlog@127.0.0.1:notaport/agentlog", "postgres"),
    ("AGENTLOG_ELASTICSEARCH_URL", "http://:9200", "elasticsearch"),
    ("AGENTLOG_CLICKHOUSE_URL", "ftp://127.0.0.1/ch", "clickhouse"),
])
def test_a_bad_address_is_one_clear_line_naming_the_service(variable: str, value: str, service: str) -> None:
    done = agentlog("stack", "status", env={variable: value})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert service in lines[0] and "Traceback" not in done.stderr


def test_an_address_where_nothing_answers_is_reported_down_with_that_address() -> None:
    port = _free_port()
    done = agentlog("stack", "status", "--json", env={"AGENTLOG_ELASTICSEARCH_URL": f"http://127.0.0.1:{port}"})
    assert done.returncode == 1
    status = json.loads(done.stdout)["elasticsearch"]
    assert status == {**status, "healthy": False, "address": f"http://127.0.0.1:{port}", "detail": "not answering"}


@pytest.mark.parametrize("given", ["2", "0", "three", "-1"])
def test_a_node_count_other_than_1_or_3_is_one_clear_line(given: str) -> None:
    for done in (agentlog("stack", "up", "--nodes", given), agentlog("stack", "status",
                                                                      env={"AGENTLOG_STACK_NODES": given})):
        assert done.returncode != 0
        said = (done.stdout + done.stderr).strip()
        assert len(said.splitlines()) == 1 and "give 1 or 3" in said and "Traceback" not in said, said


def test_a_one_node_stack_asked_to_be_three_says_so_and_loses_nothing(stack: Settings) -> None:
    before = json.loads(agentlog("stack", "status", "--json").stdout)
    done = agentlog("stack", "up", "--nodes", "3")
    said = (done.stdout + done.stderr).strip()
    assert done.returncode != 0 and len(said.splitlines()) == 1, said
    assert "one-node stack, not a three-node cluster" in said and str(stack.stack_dir) in said
    after = json.loads(agentlog("stack", "status", "--json").stdout)
    assert all(after[name]["healthy"] for name in after)
    assert after["kafka"]["nodes"] == before["kafka"]["nodes"]  # the same broker, never stopped
    assert (stack.stack_dir / "nodes").read_text().strip() == "1"


def test_the_one_node_stack_lists_its_node_with_what_it_leads(stack: Settings) -> None:
    status = json.loads(agentlog("stack", "status", "--json").stdout)
    [broker] = status["kafka"]["nodes"]
    assert broker["healthy"] and broker["leads"] == ["controller"] and broker["address"] == stack.kafka_bootstrap
    [node] = status["elasticsearch"]["nodes"]
    assert node["healthy"] and node["leads"] == ["master"] and node["pid"]
