"""The README's example and `agentlog demo`, run as a newcomer would."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy import credentials
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.local.kafka import Kafka
from agentlog.deploy.settings import Settings
from agentlog.projections.dashboard import connect
from agentlog.schemas import Codec
from tests.conftest import ROOT, agentlog, env_of
from tests.producers.test_event_log import read_all


def test_the_readme_example_records_a_conversation(isolated: Settings) -> None:
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", example], env={**__import__("os").environ, **env_of(isolated)},
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    events = sorted((Codec().decode(m.value()) for m in read_all(isolated, isolated.events_topic, 5)),
                    key=lambda e: e.sequence_number)
    assert [e.event_type.value for e in events] == ["conversation_started", "tool_called", "tool_result",
                                                    "handoff_initiated", "response_generated"]
    assert {e.subject_id for e in events} == {"user-42"}


def test_the_demo_shows_each_read_model(isolated: Settings, tmp_path) -> None:
    own = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse")
    done = agentlog("demo", "--conversations", "40", env=env_of(own))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for title in ("Replay: the refund scenario", "Dashboard: agent metrics", "Search: \"refund\"",
                  "Analytics: tool usage per agent", "Analytics: p95 tool latency"):
        assert title in out
    assert "[4] HandoffInitiated" in out and "tool: issue_refund" in out
    assert "partial refund of $44.99" in out
    assert "handoffs: triage-agent -> refund-agent" in out
    saga = out[out.index("Saga: book demo meeting (rolled_back)"):]
    assert saga.index("← Compensate Step 2: create_opportunity") < saga.index("← Compensate Step 1: qualify_lead")
    assert "refund-agent" in out.split("Dashboard: agent metrics")[1]
    assert "Open the dashboard: run `make serve` (or `agentlog serve`)" in out and "http://127.0.0.1:8000" in out
    password = out.split("Log in as 'admin' with the password ", 1)[1].split(" ", 1)[0]
    assert AuthStore(own).login("admin", password)[0].role == "admin"
    metrics = json.loads(agentlog("metrics", "--json", env=env_of(own)).stdout)
    assert sum(row["total_conversations"] for row in metrics) == 42
    sql = agentlog("sql", "SELECT count() AS n FROM agent_events", "--json", env=env_of(own))
    assert sql.returncode == 0, sql.stderr
    with_archive = json.loads(agentlog("replay", out.split("agentlog replay ")[1].split()[0], "--json",
                                       env=env_of(own)).stdout)
    assert json.loads(sql.stdout)[0]["n"] >= len(with_archive["events"]) + 40 * 3
    assert with_archive["state"]["final_response"].startswith("I have issued a partial refund of $44.99")


def test_sql_refuses_a_statement_that_writes(stack: Settings) -> None:
    done = agentlog("sql", "DROP TABLE agent_events")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: only SELECT (or WITH ... SELECT), SHOW TABLES and DESCRIBE")


def test_the_demo_twice_records_the_seeds_conversations_once(isolated: Settings, tmp_path) -> None:
    own = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse")
    for _ in range(2):
        done = agentlog("demo", "--conversations", "5", env=env_of(own))
        assert done.returncode == 0, done.stderr
    assert "Log in as one of your users" in done.stdout and "with the password" not in done.stdout
    with connect(own, role=PostgresRole.OWNER) as conn:
        counts = dict(conn.execute("SELECT conversation_id, count(*) FROM agent_events "
                                   "WHERE conversation_id IN ('conv-8842', 'conv-book-demo') GROUP BY 1").fetchall())
        anomalies = conn.execute("SELECT count(*) FROM sequence_anomalies").fetchone()[0]
    assert counts["conv-8842"] == 9 and counts["conv-book-demo"] > 5
    assert anomalies == 0


@pytest.mark.slow
def test_the_demo_works_as_the_first_command_on_a_new_broker(isolated: Settings, tmp_path) -> None:
    """A brand-new Kafka data directory (its own stack dir and ports, the stack's credentials): `stack up`, then
    `demo` at once."""
    port = _free_pair()
    shutil.copytree(credentials.secrets_dir(isolated.stack_dir), credentials.secrets_dir(tmp_path / "stack"))
    env = {**env_of(replace(isolated, clickhouse_url=f"chdb://{tmp_path}/stack/clickhouse")),
           "AGENTLOG_STACK_DIR": str(tmp_path / "stack"), "AGENTLOG_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}
    try:
        up = agentlog("stack", "up", env=env)
        assert up.returncode == 0, up.stderr
        done = agentlog("demo", "--conversations", "5", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "partial refund of $44.99" in done.stdout
    finally:
        Kafka(replace(isolated, stack_dir=tmp_path / "stack", kafka_bootstrap=f"127.0.0.1:{port}")).down()


def _free_pair() -> int:
    """A port whose next port is free too (Kafka's controller listens on port + 1)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two free ports in a row")
