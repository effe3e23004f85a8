"""ClickHouse's HTTP protocol on ``agentlog serve``: the official Python client, unchanged, on the embedded store,
as an analyst or an admin; refusals and bad input in ClickHouse's own form, never a 500."""

from __future__ import annotations

import base64
import gzip
import io
import urllib.error
import urllib.parse
import urllib.request

import clickhouse_connect
import pyarrow.parquet as parquet
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from agentlog.consumers.web.auth import AuthStore
from tests.consumers.web.conftest import Served

COUNT = "SELECT count() AS events, uniqExact(conversation_id) AS conversations FROM agent_events"


def _client(served: Served, username: str, password: str):  # type: ignore[no-untyped-def]
    return clickhouse_connect.get_client(host="127.0.0.1", port=served.clickhouse_port, username=username,
                                         password=password, database=served.settings.clickhouse_database)


def _raw(served: Served, query: str | None = None, *, body: bytes = b"", headers: dict[str, str] | None = None,
         params: dict[str, str] | None = None, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request as a client sends it: status, headers and body."""
    fields = {"database": served.settings.clickhouse_database, **(params or {})}
    if query is not None:
        fields["query"] = query
    sent = dict(headers or {})
    if auth is not None:
        sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{served.clickhouse_port}/?{urllib.parse.urlencode(fields)}",
                                     data=body or None, headers=sent, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def analyst(served: Served) -> tuple[str, str]:
    return "ann", AuthStore(served.settings).add_user("ann", "analyst")


def test_the_python_client_reads_the_embedded_store_as_an_analyst_and_with_a_token(served: Served,
                                                                                   analyst: tuple[str, str]) -> None:
    _, rows = served.post("/api/sql", {"sql": COUNT})
    expected = (rows["rows"][0]["events"], rows["rows"][0]["conversations"])
    assert expected[0] > 0

    client = _client(served, *analyst)
    assert client.query(COUNT).result_rows == [expected]
    frame = client.query_df("SELECT agent_name, count() AS n FROM agent_events GROUP BY agent_name ORDER BY agent_name")
    assert int(frame["n"].sum()) == expected[0]
    table = client.query_arrow("SELECT event_type, count() AS n FROM agent_events GROUP BY event_type")
    assert sum(table.column("n").to_pylist()) == expected[0]
    raw = client.raw_query(COUNT, fmt="Parquet")
    assert parquet.read_table(io.BytesIO(raw)).to_pylist() == [{"events": expected[0], "conversations": expected[1]}]

    with_token = _client(served, "anyone", served.token_for("analyst"))
    assert with_token.query(COUNT).result_rows == [expected]


@pytest.mark.parametrize(("statement", "code"), [
    ("INSERT INTO agent_events (event_id) VALUES ('x')", 164),
    ("CREATE TABLE t (x Int8) ENGINE = Memory", 164),
    ("SELECT * FROM file('/etc/passwd', 'CSV')", None),
    ("SELECT * FROM url('http://127.0.0.1:1/', 'CSV')", None),
    ("SELECT 1 SETTINGS readonly = 0", 164),
])
def test_what_the_sql_box_refuses_is_refused_with_clickhouses_code(served: Served, analyst: tuple[str, str],
                                                                  statement: str, code: int | None) -> None:
    status, headers, body = _raw(served, statement, auth=analyst)
    assert status in (400, 403), (status, body)
    found = int(headers["X-ClickHouse-Exception-Code"])
    assert body.startswith(f"Code: {found}. DB::Exception: ".encode()), body
    if code is not None:
        assert found == code, body
    with pytest.raises(DatabaseError, match=f"Code: {found}"):
        _client(served, *analyst).query(statement)


def test_a_support_user_a_wrong_password_and_nobody_get_clickhouses_authentication_error(served: Served) -> None:
    support = ("sam", AuthStore(served.settings).add_user("sam", "support"))
    for auth in (support, ("ann-nobody", "wrong"), None):
        status, headers, body = _raw(served, "SELECT 1", auth=auth)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516"), body
        assert b"AUTHENTICATION_FAILED" in body
    status, _, body = _raw(served, "SELECT 1", params={"readonly": "0"}, auth=("anyone", served.token))
    assert status == 400 and body.startswith(b"Code: 164."), body
    request = urllib.request.Request(f"http://127.0.0.1:{served.clickhouse_port}/ping")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.read() == b"Ok.\n"


def test_bad_input_gets_a_clickhouse_error_never_a_500(served: Served) -> None:
    admin = ("anyone", served.token)
    cases = {
        "unknown format": _raw(served, "SELECT 1 FORMAT NoSuchFormat", auth=admin),
        "body over the limit": _raw(served, body=b"SELECT 1 " + b" " * (2 << 20), auth=admin),
        "unknown compression": _raw(served, body=b"SELECT 1", headers={"Content-Encoding": "br"}, auth=admin),
        "gzip that does not inflate": _raw(served, body=b"not gzip", headers={"Content-Encoding": "gzip"}, auth=admin),
        "gzip bomb": _raw(served, body=gzip.compress(b"SELECT 1 " + b" " * (64 << 20)),
                          headers={"Content-Encoding": "gzip"}, auth=admin),
        "not SQL": _raw(served, "SELEKT", auth=admin),
        "another database": _raw(served, "SELECT 1", params={"database": "system"}, auth=admin),
    }
    for name, (status, headers, body) in cases.items():
        assert 400 <= status < 500, (name, status, body)
        assert body.startswith(b"Code: ") and "X-ClickHouse-Exception-Code" in headers, (name, body)
    assert cases["another database"][1]["X-ClickHouse-Exception-Code"] == "81"
    ok = _raw(served, body=gzip.compress(b"SELECT 41 + 1"), headers={"Content-Encoding": "gzip"}, auth=admin)
    assert ok[0] == 200 and ok[2] == b"42\n", ok
    status, headers, body = _raw(served, "SELECT event_id FROM agent_events LIMIT 100",
                                 params={"enable_http_compression": "1"}, headers={"Accept-Encoding": "gzip"}, auth=admin)
    assert status == 200 and headers["Content-Encoding"] == "gzip", (status, headers)
    assert len(gzip.decompress(body).splitlines()) == 100


def test_ten_clients_at_once_while_the_projectors_apply_all_get_their_answers(served: Served) -> None:
    """Four run at a time in the engine; the others wait for a slot, none is refused or wrong."""
    import asyncio
    import threading
    import time

    from agentlog.producers.traffic import send

    token = served.token_for("analyst")
    answers: list[tuple[int, int]] = []
    waits: list[float] = []
    failures: list[BaseException] = []

    def analyst_at_work() -> None:
        try:
            client = _client(served, "analyst", token)
            for _ in range(3):
                started = time.monotonic()
                [row] = client.query(COUNT).result_rows
                waits.append(time.monotonic() - started)
                answers.append((int(row[0]), int(row[1])))
        except BaseException as exc:  # noqa: BLE001 (reported below, with the others)
            failures.append(exc)

    writing = threading.Thread(target=lambda: asyncio.run(send(served.settings, 40, seed=23, rate=400)))
    writing.start()
    clients = [threading.Thread(target=analyst_at_work) for _ in range(10)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(120)
    writing.join(120)
    assert failures == [] and len(answers) == 30, failures[:3]
    assert all(events > 0 and conversations > 0 for events, conversations in answers)
    assert max(waits) < served.settings.sql_timeout + 5, sorted(waits)[-3:]


def test_wrong_passwords_through_the_protocol_count_toward_the_login_pages_lockout(served: Served) -> None:
    from agentlog.consumers.web.auth.store import FAILURES, BadCredentials

    auth = AuthStore(served.settings)
    name, password = "lou", auth.add_user("lou", "analyst")
    for _ in range(FAILURES):
        status, headers, _ = _raw(served, "SELECT 1", auth=(name, "not-the-password"))
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    status, _, body = _raw(served, "SELECT 1", auth=(name, password))
    assert status == 403 and b"too many failed logins" in body, body
    with pytest.raises(BadCredentials, match="too many failed logins"):
        auth.login(name, password)


def _post(served: Served, body: dict) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(served.url + "/api/sql", data=__import__("json").dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **served.auth()})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_results_as_files_from_the_api_and_the_command_line_and_never_cut_at_a_limit(served: Served,
                                                                                   tmp_path) -> None:
    import csv
    import json

    from tests.conftest import agentlog

    statement = "SELECT event_type, count() AS n FROM agent_events GROUP BY event_type ORDER BY event_type"
    _, rows = served.post("/api/sql", {"sql": statement})
    expected = [(r["event_type"], r["n"]) for r in rows["rows"]]

    status, headers, body = _post(served, {"sql": statement, "format": "csv"})
    assert status == 200 and headers["content-type"].startswith("text/csv") and "result.csv" in headers[
        "content-disposition"]
    assert [(t, int(n)) for t, n in list(csv.reader(io.StringIO(body.decode())))[1:]] == expected
    status, _, body = _post(served, {"sql": statement, "format": "parquet"})
    assert status == 200 and [(r["event_type"], r["n"]) for r in parquet.read_table(io.BytesIO(body)).to_pylist()] \
        == expected
    status, _, body = _post(served, {"sql": statement, "format": "jsonl"})
    assert status == 200 and [(r["event_type"], int(r["n"])) for r in map(json.loads, body.splitlines())] == expected
    status, _, body = _post(served, {"sql": statement, "format": "xlsx"})
    assert status == 400 and b"csv" in body

    written = tmp_path / "result.parquet"
    done = agentlog("sql", statement, "--format", "parquet", "--output", str(written), env=served.env)
    assert done.returncode == 0, done.stderr
    assert [(r["event_type"], r["n"]) for r in parquet.read_table(written).to_pylist()] == expected

    too_many = f"SELECT n FROM (SELECT arrayJoin(range({2 * served.settings.sql_rows + 1})) AS n)"
    status, _, body = _post(served, {"sql": too_many, "format": "csv"})
    assert status == 400 and b"rows" in body, body
    refused = tmp_path / "too-many.csv"
    done = agentlog("sql", too_many, "--format", "csv", "--output", str(refused), env=served.env)
    assert done.returncode != 0 and not refused.exists() and "rows" in done.stdout + done.stderr
