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
    ("SELECT 1 SETTINGS readonly = 0", None),
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
    }
    for name, (status, headers, body) in cases.items():
        assert 400 <= status < 500, (name, status, body)
        assert body.startswith(b"Code: ") and "X-ClickHouse-Exception-Code" in headers, (name, body)
    ok = _raw(served, body=gzip.compress(b"SELECT 41 + 1"), headers={"Content-Encoding": "gzip"}, auth=admin)
    assert ok[0] == 200 and ok[2] == b"42\n", ok
    status, headers, body = _raw(served, "SELECT event_id FROM agent_events LIMIT 100",
                                 params={"enable_http_compression": "1"}, headers={"Accept-Encoding": "gzip"}, auth=admin)
    assert status == 200 and headers["Content-Encoding"] == "gzip", (status, headers)
    assert len(gzip.decompress(body).splitlines()) == 100
