"""The five queries of docs/analytics.md, read from that page, give the same figures through the SQL box
(``POST /api/sql``), clickhouse-connect, and ClickHouse's official Java client (client-v2 0.10.0) and JDBC driver
(clickhouse-jdbc 0.10.0), unchanged, connected to ``agentlog serve``'s ClickHouse port; the Java clients are
refused what the box refuses, with ClickHouse's codes."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from datetime import date, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy.local.provision import done_marker, fetched, maven
from tests.conftest import ROOT
from tests.consumers.web.conftest import Served

JAVA = Path(__file__).parent / "java"
DRIVER = "0.10.0"
Answer = tuple[list[str], list[list[Any]]] | str
"""Column names and rows, or the error's line."""


def documented() -> list[str]:
    """The SQL blocks of docs/analytics.md's "Five useful queries"."""
    text = (ROOT / "docs" / "analytics.md").read_text()
    section = text.split("\n## Five useful queries\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sql\n(.*?)```", section, re.DOTALL)]


@pytest.fixture(scope="module")
def java_libs(served: Served) -> Path:
    """The JDBC driver and the client it is built on, with their dependencies, fetched from Maven Central once."""
    libs = served.settings.cache_dir / f"clickhouse-jdbc-{DRIVER}"
    if not fetched(libs):
        libs.mkdir(parents=True, exist_ok=True)
        maven("-f", str(JAVA / "pom.xml"), "dependency:copy-dependencies", f"-DoutputDirectory={libs}",
              "-DincludeScope=runtime", what=f"fetching ClickHouse's Java client {DRIVER} from Maven Central")
        done_marker(libs).touch()
    return libs


@pytest.fixture(scope="module")
def analyst(served: Served) -> tuple[str, str]:
    return "dora", AuthStore(served.settings).add_user("dora", "analyst")


@pytest.fixture(scope="module")
def support(served: Served) -> tuple[str, str]:
    return "sue", AuthStore(served.settings).add_user("sue", "support")


def _java(served: Served, libs: Path, endpoint: str, auth: tuple[str, str], statements: list[str]) -> list[Answer]:
    """Each statement's answer through the Java program (tests/consumers/web/java), one JVM for all."""
    java = shutil.which("java")
    assert java, "the Java client's test needs a JDK (java 17 or newer)"
    done = subprocess.run([java, "-cp", f"{libs}/*", str(JAVA / "ClickHouseQueries.java"), endpoint, *auth,
                           served.settings.clickhouse_database], input="\n;\n".join(statements), text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answers: list[Answer] = []
    lines = iter(done.stdout.splitlines())
    for line in lines:
        if line.startswith("error\t"):
            answers.append(_unescape(line[6:]))
            continue
        assert line == "result", done.stdout[-2000:]
        names = [_unescape(n) for n in next(lines).split("\t")]
        rows = []
        for row in lines:
            if row == "end":
                break
            rows.append([None if v == "\\N" else _unescape(v) for v in row.split("\t")])
        answers.append((names, rows))
    assert len(answers) == len(statements), done.stdout[-2000:]
    return answers


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n"}.get(m.group(1), m.group(1)), value)


def _canonical(value: Any) -> Any:
    """One form for a value whichever client read it: a number as a float, a date or time as a naive datetime."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    text = str(value)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        return text


def _same(a: Answer, b: Answer) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return False
    (names_a, rows_a), (names_b, rows_b) = a, b
    if names_a != names_b or len(rows_a) != len(rows_b):
        return False
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        if len(row_a) != len(row_b):
            return False
        for x, y in zip(map(_canonical, row_a), map(_canonical, row_b), strict=True):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
                    return False
            elif x != y:
                return False
    return True


def test_the_five_documented_queries_give_the_same_figures_through_every_client(
        served: Served, analyst: tuple[str, str], java_libs: Path) -> None:
    statements = documented()
    assert len(statements) == 5, statements
    box: list[tuple[list[str], list[list[Any]]]] = []
    for statement in statements:
        status, body = served.post("/api/sql", {"sql": statement})
        assert status == 200, (statement, body)
        rows = body["rows"]
        assert rows, f"the served world should give each documented query some rows: {statement}"
        box.append((list(rows[0]), [list(r.values()) for r in rows]))
    cost, latency, failures, paths, subjects = (rows for _, rows in box)
    assert sum(r[2] for r in cost) > 0 and all(r[3] >= r[2] for r in latency)
    assert any(r[2] > 0 for r in failures), "the simulation has failed tool calls"
    assert paths[0][0].count(" > ") >= 1 and any(r[1] > 1 for r in subjects)

    client = clickhouse_connect.get_client(host="127.0.0.1", port=served.clickhouse_port, username=analyst[0],
                                           password=analyst[1], database=served.settings.clickhouse_database)
    python: list[Answer] = []
    for statement in statements:
        result = client.query(statement)
        python.append((list(result.column_names), [list(r) for r in result.result_rows]))
    endpoint = f"http://127.0.0.1:{served.clickhouse_port}/"
    java = _java(served, java_libs, endpoint, analyst, statements)
    jdbc = _java(served, java_libs, f"jdbc:clickhouse:{endpoint}", analyst, statements)
    for i, statement in enumerate(statements):
        for name, answer in (("clickhouse-connect", python[i]), ("client-v2", java[i]), ("jdbc", jdbc[i])):
            assert _same(box[i], answer), (name, statement, box[i], answer)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:{port}/", "jdbc:clickhouse:http://127.0.0.1:{port}/"])
def test_the_java_clients_are_refused_what_the_box_refuses_with_clickhouses_codes(
        served: Served, analyst: tuple[str, str], support: tuple[str, str], java_libs: Path, endpoint: str) -> None:
    refused = {"INSERT INTO agent_events (event_id) VALUES ('x')": 164,
               "CREATE TABLE t (x Int8) ENGINE = Memory": 164,
               "SELECT * FROM file('/etc/passwd', 'CSV')": 164,
               "SELECT * FROM url('http://127.0.0.1:1/', 'CSV')": 164,
               "SELECT 1 SETTINGS readonly = 0": 164,
               "SELECT * APPLY(file) FROM agent_events": 164,
               "SELECT count() FROM system.one": None}
    answers = _java(served, java_libs, endpoint.format(port=served.clickhouse_port), analyst, list(refused))
    for (statement, code), answer in zip(refused.items(), answers, strict=True):
        if code is None:
            assert answer == (["count()"], [["1"]]), answer
            continue
        assert isinstance(answer, str) and answer.startswith(f"Code: {code}. DB::Exception: "), (statement, answer)
    [answer] = _java(served, java_libs, endpoint.format(port=served.clickhouse_port), support, ["SELECT 1"])
    assert isinstance(answer, str) and answer.startswith("Code: 516.") and "AUTHENTICATION_FAILED" in answer, answer
