"""The JSON API of ``agentlog serve``: the CLI's numbers, one-line errors, Prometheus metrics."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.parse

import pytest

from tests.conftest import agentlog
from tests.consumers.web.conftest import SIMULATED, Served, free_port

BY_TYPE = "SELECT event_type, count() AS n FROM agent_events GROUP BY event_type ORDER BY event_type"


def cli(served: Served, *args: str):
    done = agentlog(*args, "--json", env=served.env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_api_gives_the_cli_numbers(served: Served) -> None:
    status, metrics = served.get("/api/metrics?since=24h")
    assert status == 200
    assert metrics == cli(served, "metrics", "--since", "24h")
    assert sum(row["total_conversations"] for row in metrics) == SIMULATED + 2
    assert any(row["active_agent"] == "refund-agent" and row["total_handoffs"] >= 1 for row in metrics)

    _, found = served.get("/api/search?" + urllib.parse.urlencode({"q": "partial refund", "limit": 50}))
    assert found == cli(served, "search", "partial refund", "--limit", "50")
    assert served.refund_id in [hit["conversation_id"] for hit in found["hits"]]

    _, replayed = served.get(f"/api/conversations/{served.refund_id}")
    assert replayed == cli(served, "replay", served.refund_id)
    assert replayed["state"]["final_response"].startswith("I have issued a partial refund of $44.99")

    _, by_type = served.post("/api/sql", {"sql": BY_TYPE})
    assert by_type["rows"] == cli(served, "sql", BY_TYPE)

    _, lag = served.get("/api/lag")
    assert lag == cli(served, "lag")
    assert set(lag) == {"dashboard", "search", "analytics"}

    _, counters = served.get("/api/counters")
    assert counters["events"] == sum(row["n"] for row in by_type["rows"]) == served.events  # Postgres = ClickHouse
    assert counters["conversations"] == SIMULATED + 2
    assert counters["sagas_rolled_back"] >= 1


def test_the_conversation_list_filters(served: Served) -> None:
    _, everything = served.get("/api/conversations?limit=1000")
    assert len(everything) == SIMULATED + 2
    _, refunds = served.get("/api/conversations?agent=refund-agent&limit=1000")
    assert refunds and all(row["active_agent"] == "refund-agent" or row["handoff_count"] for row in refunds)
    assert len(refunds) < len(everything)
    _, completed = served.get("/api/conversations?status=completed&limit=1000")
    assert completed and all(row["status"] == "completed" for row in completed)
    _, first = served.get("/api/conversations?limit=10")
    last = first[-1]
    _, second = served.get("/api/conversations?" + urllib.parse.urlencode(
        {"limit": 10, "before": f"{last['started_at']}|{last['id']}"}))
    assert [row["id"] for row in first + second] == [row["id"] for row in everything[:20]]
    status, body = served.get("/api/conversations?before=yesterday")
    assert status == 400 and body["detail"] == "before='yesterday': use the cursor a page gave (started_at|id)"


def test_the_charts_come_from_clickhouse(served: Served) -> None:
    _, charts = served.get("/api/charts")
    calls = sum(row["calls"] for row in charts["tool_calls"])
    _, rows = served.post("/api/sql", {"sql": "SELECT count() AS n FROM agent_events "
                                              "WHERE event_type = 'tool_called'"})
    assert calls == rows["rows"][0]["n"] > 0
    assert {row["model"] for row in charts["models"]} and all(row["cost_usd"] > 0 for row in charts["models"])


def test_mistakes_are_one_line(served: Served) -> None:
    status, body = served.get("/api/conversations/conv-that-never-was")
    assert status == 404 and body["detail"].startswith("no conversation 'conv-that-never-was' in the log")
    status, body = served.post("/api/sql", {"sql": "DROP TABLE agent_events"})
    assert status == 400 and body["detail"].startswith("only SELECT (or WITH ... SELECT), SHOW TABLES and DESCRIBE")
    status, body = served.post("/api/sql", {"sql": "SELECT nothing_here FROM agent_events"})
    assert status == 400 and "nothing_here" in body["detail"] and "\n" not in body["detail"]
    status, body = served.get("/api/metrics?since=forever")
    assert status == 400 and "use a duration like 30m, 24h or 7d" in body["detail"]
    status, body = served.get("/api/search?q=refund&limit=0")
    assert status == 400 and body["detail"] == "limit: Input should be greater than or equal to 1"
    status, body = served.post("/api/sql", {"statement": "SELECT 1"})
    assert status == 400 and body["detail"] == 'the body must be JSON: {"sql": "SELECT ..."}'
    with pytest.raises(urllib.error.HTTPError) as page:
        served.text("/conversations/conv-that-never-was")
    assert page.value.code == 404 and "no conversation &#39;conv-that-never-was&#39; in the log" in page.value.read().decode()


def test_prometheus_sees_the_projectors(served: Served) -> None:
    text = served.text("/metrics")
    applied = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^agentlog_events_applied_total\{projection="(\w+)"\} (\S+)$', text, re.M)}
    assert applied == {"dashboard": served.events, "search": served.events, "analytics": served.events}
    assert re.search(r'^agentlog_projector_up\{projection="analytics"\} 1\.0$', text, re.M)
    _, health = served.get("/api/health")
    assert {name: (run["running"], run["events"]) for name, run in health["projectors"].items()} == {
        name: (True, served.events) for name in ("dashboard", "search", "analytics")}
    assert all(run["per_second"] >= 0 and run["error"] is None for run in health["projectors"].values())


def test_sql_from_another_process_goes_through_serve(served: Served) -> None:
    done = agentlog("sql", "SELECT count() AS n FROM agent_events", "--json", env=served.env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": served.events}]


def test_serve_says_what_is_wrong_in_one_line(served: Served, tmp_path) -> None:
    down = agentlog("serve", "--port", str(free_port()), env={**served.env, "AGENTLOG_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
                    timeout=60)
    assert down.returncode == 1
    assert down.stderr.strip() == ("error: kafka: nothing answers at 127.0.0.1:1; run `agentlog stack up` "
                                   "(or point AGENTLOG_* at a running one)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = agentlog("serve", "--port", str(port), env={**served.env, "AGENTLOG_CLICKHOUSE_URL": f"chdb://{tmp_path}"},
                        timeout=60)
    assert busy.returncode == 1
    assert busy.stderr.strip().startswith(f"error: 127.0.0.1:{port} is already in use;")
    metrics = agentlog("metrics", env={**served.env, "AGENTLOG_POSTGRES_DSN": "postgresql://agentlog@127.0.0.1:1/x"})
    assert metrics.returncode == 1 and len(metrics.stderr.strip().splitlines()) == 1
    assert metrics.stderr.startswith("error: postgres at 127.0.0.1:1 as agentlog_reader:")
    assert "`agentlog stack up` starts the local one" in metrics.stderr


def test_the_dashboard_shows_what_agents_on_its_machine_keep_in_their_spool(served: Served) -> None:
    import shutil
    import time

    from agentlog.producers.spool import Spool
    from agentlog.producers.spool.records import Record
    from agentlog.schemas import Codec
    from tests.factories import make_conversation

    codec = Codec()
    assert served.get("/api/spool")[1]["events"] == 0
    assert 'data-events="0"' in served.text("/")
    spool = Spool(served.settings.spool_dir, max_bytes=1 << 20)  # what a stopped agent left
    spool.write([Record(served.settings.events_topic, e.conversation_id.encode(), codec.encode(e), e.sequence_number,
                        time.time()) for _ in range(3) for e in make_conversation(tools=1)])
    spool.close()
    try:
        status, found = served.get("/api/spool")
        assert status == 200 and (found["events"], found["conversations"]) == (12, 3)
        assert found == cli(served, "spool", "status")
        page = served.text("/")
        assert '<b id="spool-events">12</b>' in page and "agentlog spool flush" in page
        assert served.get("/api/spool", token=served.token_for("operator"))[0] == 200
        assert served.get("/api/spool", token=served.token_for("support"))[0] == 403
    finally:
        for path in served.settings.spool_dir.iterdir():
            shutil.rmtree(path)
