"""``agentlog serve`` tried as a hostile user would: the SQL box, forged requests, odd parameters, markup."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from agentlog.consumers.web.security import MAX_BODY
from agentlog.producers import Conversation, EventLog
from tests.conftest import agentlog
from tests.consumers.web.conftest import Served

OUT = Path("/tmp/agentlog-served-sql-wrote-this")


def request(served: Served, path: str, *, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, token: str | None | object = ...) -> tuple[int, dict[str, str], str]:
    """A request as the tests' admin (or as ``token``'s holder; ``None``: nobody)."""
    req = urllib.request.Request(served.url + path, data=body, method=method,
                                 headers={**served.auth(token), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.mark.parametrize("statement,why", [
    (f"SELECT 42 INTO OUTFILE '{OUT}'", "INTO OUTFILE and FORMAT are not allowed"),
    ("SELECT * FROM file('/etc/shadow', 'LineAsString')", "table function file() is not allowed"),
    ("SELECT file('/proc/self/environ', 'RawBLOB')", "function file() is not allowed"),
    ("SELECT * FROM url('http://127.0.0.1:9200/_search', 'JSONAsString')", "table function url() is not allowed"),
])
def test_the_sql_box_refuses_the_host_through_the_api_and_the_cli(served: Served, statement: str, why: str) -> None:
    OUT.unlink(missing_ok=True)
    status, body = served.post("/api/sql", {"sql": statement})
    assert status == 400 and body["detail"].startswith(why) and "\n" not in body["detail"]
    done = agentlog("sql", statement, env=served.env)
    assert done.returncode == 1 and done.stderr.strip() == f"error: {body['detail']}"
    assert not OUT.exists()


def test_a_heavy_query_ends_at_its_limit_while_the_projectors_go_on(served: Served) -> None:
    """numbers(1e12) ends at the time limit with one line; analytics applies what arrives meanwhile."""
    status, before = served.post("/api/sql", {"sql": "SELECT count() AS n FROM agent_events"})
    assert status == 200

    async def one_more() -> None:
        async with EventLog(served.settings, topic=served.settings.events_topic) as log:
            async with Conversation(log, agent="triage-agent") as conv:
                await conv.started("a question asked while an analyst's query runs")

    outcome: dict[str, object] = {}

    def heavy() -> None:
        started = time.monotonic()
        outcome["answer"] = served.post("/api/sql", {"sql": "SELECT count() FROM numbers(1e12)"})
        outcome["seconds"] = time.monotonic() - started

    runner = threading.Thread(target=heavy)
    runner.start()
    time.sleep(1)
    asyncio.run(one_more())
    deadline = time.monotonic() + 20
    seen = before["rows"][0]["n"]
    while time.monotonic() < deadline and seen == before["rows"][0]["n"]:
        seen = served.post("/api/sql", {"sql": "SELECT count() AS n FROM agent_events"})[1]["rows"][0]["n"]
        time.sleep(0.2)
    applied_while_running = runner.is_alive()
    runner.join(60)
    assert seen == before["rows"][0]["n"] + 1 and applied_while_running
    status, body = outcome["answer"]  # type: ignore[misc]
    assert status == 400 and body["detail"].startswith("the query ran past the time limit of 8 s")
    assert float(outcome["seconds"]) < 30  # type: ignore[arg-type]
    served.events += 1


def test_nothing_runs_a_query_from_a_link_or_another_site(served: Served) -> None:
    status, _, text = request(served, "/api/sql?q=SELECT%201")
    assert status == 405 and "POST /api/sql" in text
    status, _, text = request(served, "/api/sql", method="POST", body=b"sql=SELECT+1",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403 and "send the body as JSON" in text
    status, _, text = request(served, "/api/sql", method="POST", body=b'{"sql": "SELECT 1"}',
                              headers={"Content-Type": "application/json", "Origin": "http://evil.example"})
    assert status == 403 and "http://evil.example may not change anything here" in text
    status, _, page = request(served, "/analytics?sql=" + urllib.parse.quote("SELECT 'ran' AS r"))
    assert status == 200 and "sql-rows" not in page  # the link fills the box; it runs nothing
    status, _, page = request(served, "/analytics", method="POST", body=b"sql=SELECT+1&csrf=guess",
                              headers={"Content-Type": "application/x-www-form-urlencoded",
                                       "Cookie": "agentlog_csrf=mine"})
    assert status == 403 and "token does not match" in page
    status, _, page = request(served, "/analytics", method="POST",
                              body=b"sql=SELECT+%27ran%27+AS+r&csrf=mine",
                              headers={"Content-Type": "application/x-www-form-urlencoded",
                                       "Cookie": "agentlog_csrf=mine"})
    assert status == 200 and "sql-rows" in page and "<td>ran</td>" in page


def test_every_answer_carries_the_security_headers_and_the_host_is_checked(served: Served) -> None:
    for path in ["/", "/api/counters", "/static/app.css", "/api/conversations/conv-that-never-was"]:
        _, headers, _ = request(served, path)
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert (headers["x-frame-options"], headers["x-content-type-options"]) == ("DENY", "nosniff")
    status, _, _ = request(served, "/api/counters", headers={"Host": "attacker.example"})
    assert status == 400
    status, _, _ = request(served, "/api/counters", headers={"Host": "localhost"})
    assert status == 200


@pytest.mark.parametrize("path,status,detail", [
    ("/api/metrics?since=99999999999999h", 400, "at most a hundred years"),
    ("/api/conversations/%00", 400, "conversation id holds a NUL character"),
    ("/api/conversations?agent=a%00b", 400, "agent holds a NUL character"),
    ("/api/search?since=99999999999h", 400, "at most a hundred years"),
    ("/api/search?q=" + "+".join(["refund"] * 14_000), 400, "characters; at most 1,000"),
    ("/api/search?q=" + "+".join(["r"] * 300), 400, "the search has 300 words; at most 100"),
])
def test_a_mistake_is_a_400_with_one_line(served: Served, path: str, status: int, detail: str) -> None:
    got, body = served.get(path)
    assert got == status and detail in body["detail"] and "\n" not in body["detail"]


def test_a_users_markup_is_never_a_highlight(served: Served) -> None:
    async def record() -> str:
        async with EventLog(served.settings, topic=served.settings.events_topic) as log:
            async with Conversation(log, agent="triage-agent") as conv:
                await conv.started("<em>bold</em> request: zanzibarquokka please")
                return conv.conversation_id

    cid = asyncio.run(record())
    served.events += 1
    deadline = time.monotonic() + 30
    found: dict = {"hits": []}
    while time.monotonic() < deadline and not found["hits"]:
        _, found = served.get("/api/search?q=zanzibarquokka")
        time.sleep(0.3)
    assert [hit["conversation_id"] for hit in found["hits"]] == [cid]
    assert found["hits"][0]["highlights"] == ["&lt;em&gt;bold&lt;&#x2F;em&gt; request: <em>zanzibarquokka</em> please"]
    page = served.text("/search?q=zanzibarquokka")
    assert "&lt;em&gt;bold&lt;/em&gt; request: <mark>zanzibarquokka</mark> please" in page
    assert "<mark>bold</mark>" not in page


def test_a_body_too_large_is_refused_before_it_is_read(served: Served) -> None:
    """A Content-Length over the limit is answered 413 at once, without reading the body it announces."""
    host, port = served.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", "/api/sql")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Authorization", f"Bearer {served.token}")
        connection.putheader("Content-Length", str(2 << 20))
        connection.endheaders(b'{"sql": "')
        response = connection.getresponse()
        assert response.status == 413 and "larger than 1,048,576 bytes" in response.read().decode()
    finally:
        connection.close()
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:  # no Content-Length: the body is counted as it arrives
        connection.putrequest("POST", "/api/sql")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Authorization", f"Bearer {served.token}")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        chunk = b"x" * 65536
        for _ in range((MAX_BODY // len(chunk)) + 2):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        assert response.status == 413 and "larger than 1,048,576 bytes" in response.read().decode()
    finally:
        connection.close()
    status, _, _ = request(served, "/api/sql", method="POST", body=b'{"sql": "SELECT 1 AS one"}',
                           headers={"Content-Type": "application/json"})
    assert status == 200
