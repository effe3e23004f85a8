"""The analysts' SQL box against the real embedded ClickHouse: what it refuses (by ClickHouse's own parse),
what it lets through, and its limits — which stop a query without holding the analytics projector back."""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from agentlog.deploy import engine
from agentlog.deploy.clients import chdb_path
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics import AnalyticsProjection
from agentlog.projections.analytics.queries import NotReadOnly, QueryFailed, SQLBox
from tests.factories import make_conversation
from tests.projections.test_contract import batch_of

OUT = Path("/tmp/agentlog-sql-box-wrote-this")

HOSTILE = [
    (f"SELECT 42 INTO OUTFILE '{OUT}'", "INTO OUTFILE and FORMAT are not allowed"),
    (f"SELECT 42 INTO OUTFILE '{OUT}' APPEND", "INTO OUTFILE and FORMAT are not allowed"),
    (f"SELECT 42 INTO OUTFILE '{OUT}' TRUNCATE", "INTO OUTFILE and FORMAT are not allowed"),
    ("SELECT * FROM file('/etc/shadow', 'LineAsString')", "table function file() is not allowed"),
    ("SELECT file('/proc/self/environ', 'RawBLOB')", "function file() is not allowed"),
    ("SELECT * FROM postgresql('127.0.0.1:5432', 'agentlog', 'conversation_views', 'agentlog', '')",
     "table function postgresql() is not allowed"),
    ("SELECT * FROM url('http://127.0.0.1:9200/conversations/_search', 'JSONAsString')",
     "table function url() is not allowed"),
    ("SELECT * FROM s3('http://127.0.0.1:1/x', 'CSV')", "table function s3() is not allowed"),
    ("SELECT * FROM system.tables", "table of database 'system'"),
    ("SELECT 1 FROM agent_events WHERE event_id IN system.tables", "table of database 'system'"),
    ("SELECT count() FROM agent_events SETTINGS max_execution_time = 1000", "SETTINGS are not allowed"),
    ("SELECT joinGet('db.t', 'v', 1)", "function joinGet() is not allowed"),
    ("SELECT dictGetString('d', 'a', toUInt64(1))", "function dictGetString() is not allowed"),
    ("INSERT INTO agent_events SELECT * FROM agent_events", "only SELECT"),
    ("DROP TABLE agent_events", "only SELECT"),
    ("SET readonly = 0", "only SELECT"),
    ("SELECT 1 FORMAT JSON", "INTO OUTFILE and FORMAT are not allowed"),
    ("SELECT 1; SELECT 2", "Multi-statements are not allowed"),
    (f"EXPLAIN AST SELECT 1; SELECT 1 INTO OUTFILE '{OUT}'", "Multi-statements are not allowed"),
    (f"EXPLAIN SYNTAX SELECT 1 INTO OUTFILE '{OUT}'", "INTO OUTFILE"),
]


@pytest.mark.parametrize("statement,why", HOSTILE, ids=[s for s, _ in HOSTILE])
def test_the_box_refuses_what_reaches_outside_the_analytics_tables(box: SQLBox, statement: str, why: str) -> None:
    OUT.unlink(missing_ok=True)
    with pytest.raises((NotReadOnly, QueryFailed)) as refused:
        box.run(statement)
    assert why in str(refused.value) and "\n" not in str(refused.value)
    assert not OUT.exists()


@pytest.mark.parametrize("statement,rows", [
    ("SELECT ';' AS s", [{"s": ";"}]),
    ("SELECT 'x -- y' AS s -- a comment", [{"s": "x -- y"}]),
    ("SELECT /* ; */ 1 AS one", [{"one": 1}]),
    ("\n    SELECT 'it''s\n' AS s,\n           1 AS one\n", [{"s": "it's\n", "one": 1}]),
    ("WITH t AS (SELECT number AS n FROM numbers(3)) SELECT sum(n) AS total FROM t", [{"total": 3}]),
    ("SELECT count() AS n FROM agent_events WHERE event_type IN ('tool_called', 'tool_result')", [{"n": 0}]),
])
def test_the_box_runs_what_only_reads(box: SQLBox, statement: str, rows: list) -> None:
    assert box.run(statement) == rows


def test_the_box_knows_its_tables(box: SQLBox, isolated: Settings) -> None:
    assert {"agent_events", "tool_usage_hourly"} <= {row["name"] for row in box.run("SHOW TABLES")}
    assert "event_id" in {row["name"] for row in box.run("DESCRIBE TABLE agent_events")}
    assert box.run(f"SELECT count() AS n FROM {isolated.clickhouse_database}.agent_events") == [{"n": 0}]
    with pytest.raises(NotReadOnly):
        box.run("SHOW TABLES FROM system")


def test_limits_stop_a_query_while_the_projector_applies(isolated: Settings) -> None:
    """numbers(1e12) ends at the time limit; meanwhile the analytics projection keeps writing."""
    limited = replace(isolated, sql_timeout=4.0, sql_memory=300 << 20)
    projection = AnalyticsProjection(limited)
    projection.setup()
    box = SQLBox(limited)
    outcome: dict[str, object] = {}

    def heavy() -> None:
        started = time.monotonic()
        try:
            box.run("SELECT count() FROM numbers(1e12)")
        except QueryFailed as exc:
            outcome["error"] = str(exc)
        outcome["seconds"] = time.monotonic() - started

    try:
        runner = threading.Thread(target=heavy)
        runner.start()
        time.sleep(0.5)
        conversations = [make_conversation(tools=3) for _ in range(20)]
        started = time.monotonic()
        projection.apply(batch_of(conversations, limited.events_topic))
        applied_in = time.monotonic() - started
        written = box.run("SELECT count() AS n FROM agent_events")  # a second query runs beside the first
        runner.join(30)
        assert written == [{"n": sum(len(c) for c in conversations)}]
        assert applied_in < 2.0, f"the projector waited {applied_in:.2f}s for the analyst's query"
        assert "time limit of 4 s (AGENTLOG_SQL_TIMEOUT)" in str(outcome["error"])
        assert 3.5 < float(outcome["seconds"]) < 10  # type: ignore[arg-type]
        with pytest.raises(QueryFailed, match=r"memory limit of 300 MiB \(AGENTLOG_SQL_MEMORY\)"):
            box.run("SELECT length(groupArray(number)) FROM numbers(300000000)")
        with pytest.raises(QueryFailed, match=r"larger than the limit of 10,000 rows"):
            box.run("SELECT number FROM numbers(100000)")
    finally:
        projection.close()


def test_the_engine_answers_only_its_two_principals(box: SQLBox, isolated: Settings) -> None:
    """The engine speaks ClickHouse's HTTP protocol on loopback to the writer and the analyst, each with a token
    of its own kept in a file only agentlog's user reads; anyone else gets ClickHouse's authentication error."""
    path = chdb_path(isolated.clickhouse_url)
    endpoint = engine.running(path)
    assert endpoint is not None
    record = engine.record(path)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600 and json.loads(record.read_text())["writer"] == endpoint.writer

    def ask(user: str, key: str, query: str = "SELECT 1") -> tuple[int, str]:
        request = urllib.request.Request(f"{endpoint.url}/?database={isolated.clickhouse_database}",
                                         data=query.encode(), headers={"X-ClickHouse-User": user,
                                                                       "X-ClickHouse-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    for user, key in (("agentlog", ""), ("agentlog", endpoint.analyst), ("analyst", endpoint.writer[:-1]),
                      ("default", ""), ("", "")):
        status, text = ask(user, key)
        assert status == 403 and "Code: 516" in text and "AUTHENTICATION_FAILED" in text
    assert ask("analyst", endpoint.analyst) == (200, "1\n")
    status, text = ask("analyst", endpoint.analyst, "SELECT * FROM file('/etc/shadow', 'LineAsString')")
    assert status == 400 and "Code: 164" in text and "table function file() is not allowed" in text
    status, text = ask("analyst", endpoint.analyst, "INSERT INTO agent_events SELECT * FROM agent_events")
    assert status == 400 and "only SELECT" in text
    request = urllib.request.Request(f"{endpoint.url}/?database=system", data=b"SELECT name FROM tables",
                                     headers={"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": endpoint.analyst})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400 and b"reads the analytics database, not system" in refused.value.read()
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as sock:  # 1 GB said, none sent
        sock.sendall(b"POST /?query=SELECT%201 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 403")  # refused before a byte of the body is read
