"""Analysts' SQL box: one statement that reads the analytics database and nothing else, within limits.

What a statement may touch is decided by ClickHouse's own parser, never by keywords:
1. ``formatQuerySingleLine`` (the statement as a bound parameter: parsed, not run) gives its canonical
   text and refuses a second statement;
2. ``EXPLAIN AST`` of that text, run as a subquery (ClickHouse refuses ``INTO OUTFILE`` and ``FORMAT``
   there), gives its syntax tree, which is walked: a SELECT (or ``SHOW TABLES``, ``DESCRIBE TABLE``),
   tables of the analytics database only, table functions from a short list that reads nothing
   (``numbers``), no function that reads a file or another table by name, no ``SETTINGS``.
Then it runs on a handle of its own, opened with ``readonly=1`` and the limits (time, memory, result
rows and bytes), which the statement cannot change; the projector's handle is never held meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from clickhouse_connect.driver.client import Client

from agentlog.deploy import clients
from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.schemas.errors import AgentlogError

MAX_STATEMENT = 100_000
"""Characters of SQL the box takes."""
TABLE_FUNCTIONS = frozenset({"numbers", "zeros", "generate_series", "generateSeries"})
"""Table functions that read nothing but what they make."""
FORBIDDEN_FUNCTIONS = frozenset({"file", "joinGet", "joinGetOrNull", "filesystemAvailable", "filesystemCapacity",
                                 "filesystemUnreserved", "filesystemFree"})
"""Functions that reach outside the query's tables: a file on the host, a table named in a string."""
_DICTIONARY = re.compile(r"^dict[A-Z]")
_IN = frozenset({"in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "globalNullIn",
                 "globalNotNullIn"})
_DESCRIBE = re.compile(r"^DESCRIBE TABLE (?:(?P<db>\w+|`[^`]+`)\.)?(?P<table>\w+|`[^`]+`)$")
_PARSE_TIMEOUT = 5


class NotReadOnly(AgentlogError):
    """A statement the box does not run: it would write, or reach outside the analytics database."""


class QueryFailed(AgentlogError):
    """ClickHouse refused the statement, or it went past a limit."""


class Busy(StackError):
    """Every slot of the box is taken by a running query."""


@dataclass(frozen=True)
class Limits:
    seconds: float
    memory: int
    rows: int
    bytes: int

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        return cls(settings.sql_timeout, settings.sql_memory, settings.sql_rows, settings.sql_bytes)

    def engine_settings(self) -> dict[str, object]:
        return {"readonly": 1, "max_execution_time": self.seconds, "max_memory_usage": self.memory,
                "max_result_rows": self.rows, "max_result_bytes": self.bytes, "result_overflow_mode": "throw",
                "timeout_overflow_mode": "throw"}

    def explain(self, code: int, message: str) -> str:
        """ClickHouse's refusal, said as the limit it hit and how to stay under it."""
        if code == 159:
            return (f"the query ran past the time limit of {self.seconds:g} s (AGENTLOG_SQL_TIMEOUT) and was "
                    "stopped; narrow it with WHERE or read an hourly table")
        if code == 241:
            return (f"the query needed more than the memory limit of {_size(self.memory)} (AGENTLOG_SQL_MEMORY) "
                    "and was stopped; aggregate more or narrow it")
        if code == 396:
            return (f"the result is larger than the limit of {self.rows:,} rows or {_size(self.bytes)} "
                    "(AGENTLOG_SQL_ROWS, AGENTLOG_SQL_BYTES); add a LIMIT or aggregate")
        return message


def _size(n: int) -> str:
    return f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):g} MiB"


# -- the parse -------------------------------------------------------------------------------------------------


def admit(parser: Client, statement: str, database: str) -> str:
    """The statement's canonical text when the box may run it; NotReadOnly saying why when it may not.

    ``parser``: a ClickHouse client that only parses here (nothing of the statement is run on it).
    """
    if not isinstance(statement, str) or not statement.strip():
        raise NotReadOnly("no statement: write one SELECT over the analytics tables")
    if len(statement) > MAX_STATEMENT:
        raise NotReadOnly(f"the statement has {len(statement):,} characters; the box takes at most {MAX_STATEMENT:,}")
    if "\x00" in statement:
        raise NotReadOnly("the statement holds a NUL character")
    canonical = str(_parse(parser, "SELECT formatQuerySingleLine({statement:String})", {"statement": statement})[0][0])
    if canonical.startswith("SHOW TABLES"):
        if canonical != "SHOW TABLES":
            raise NotReadOnly("SHOW TABLES lists the analytics database's tables; it takes no FROM, LIKE or options")
        return canonical
    describe = _DESCRIBE.match(canonical)
    if describe:
        _check_table(describe.group("db"), database)
        return canonical
    try:
        tree = [str(row[0]) for row in _parse(parser, f"SELECT explain FROM (EXPLAIN AST {canonical})")]
    except QueryFailed as exc:
        if "output options" in str(exc):
            raise NotReadOnly("INTO OUTFILE and FORMAT are not allowed: the box returns rows, it writes no file") \
                from None
        if "only SELECT" in str(exc):
            raise NotReadOnly("only SELECT (or WITH ... SELECT), SHOW TABLES and DESCRIBE TABLE run here") from None
        raise
    _walk(tree, database)
    return canonical


def _parse(parser: Client, query: str, parameters: dict[str, Any] | None = None) -> list[Sequence[Any]]:
    try:
        return list(parser.query(query, parameters=parameters,
                                 settings={"max_execution_time": _PARSE_TIMEOUT}).result_rows)
    except Exception as exc:  # the driver's DatabaseError carries ClickHouse's own message
        raise QueryFailed(_first_line(exc)) from exc


def _walk(tree: list[str], database: str) -> None:
    """Every node of ``EXPLAIN AST``'s tree (one a line, indented by depth) is one the box allows."""
    if not tree or not tree[0].startswith("SelectWithUnionQuery"):
        raise NotReadOnly("only SELECT (or WITH ... SELECT), SHOW TABLES and DESCRIBE TABLE run here")
    nodes = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in tree]
    for i, (_, node) in enumerate(nodes):
        kind, _, rest = node.partition(" ")
        name = rest.split(" (", 1)[0]
        if kind == "Set":
            raise NotReadOnly("SETTINGS are not allowed: the box's limits are fixed (AGENTLOG_SQL_TIMEOUT, "
                              "AGENTLOG_SQL_MEMORY, AGENTLOG_SQL_ROWS, AGENTLOG_SQL_BYTES)")
        if kind == "TableIdentifier":
            if name != "system.one":  # where a SELECT without FROM reads its one row
                _check_table(_database_of(name), database)
        elif kind == "Function":
            if _is_table_function(nodes, i):
                if name not in TABLE_FUNCTIONS:
                    raise NotReadOnly(f"table function {name}() is not allowed: the box reads the analytics "
                                      f"tables (and {', '.join(sorted(TABLE_FUNCTIONS))})")
            elif name in FORBIDDEN_FUNCTIONS or _DICTIONARY.match(name):
                raise NotReadOnly(f"function {name}() is not allowed: it reads outside the analytics tables")
            elif name in _IN:
                _check_in(nodes, i, database)


def _is_table_function(nodes: list[tuple[int, str]], i: int) -> bool:
    """A function whose parent is a TableExpression (``FROM f(...)``)."""
    depth = nodes[i][0]
    for j in range(i - 1, -1, -1):
        if nodes[j][0] < depth:
            return nodes[j][1].startswith("TableExpression")
    return False


def _check_in(nodes: list[tuple[int, str]], i: int, database: str) -> None:
    """``x IN name``: a bare name on the right of IN is a table, held to the same rule as FROM."""
    depth = nodes[i][0]
    arguments = [node for d, node in _children(nodes, i + 1, depth + 1)]  # the ExpressionList
    if len(arguments) >= 2 and arguments[1].startswith("Identifier "):
        _check_table(_database_of(arguments[1].split(" ", 1)[1].split(" (", 1)[0]), database)


def _children(nodes: list[tuple[int, str]], start: int, depth: int) -> Iterator[tuple[int, str]]:
    """The nodes one level under the ExpressionList that starts at ``start``."""
    if start >= len(nodes):
        return
    for d, node in nodes[start + 1:]:
        if d <= depth:
            return
        if d == depth + 1:
            yield d, node


def _database_of(name: str) -> str | None:
    return name.split(".", 1)[0] if "." in name else None


def _check_table(named: str | None, database: str) -> None:
    if named is not None and named.strip("`") != database:
        raise NotReadOnly(f"table of database {named.strip('`')!r}: the box reads only the analytics database "
                          f"({database}); name its tables without a database")


# -- running -----------------------------------------------------------------------------------------------------


class SQLBox:
    """Runs admitted statements on handles of their own; at most ``slots`` at a time.

    With the embedded engine each query opens a read-only handle on the store (``readonly=1`` and the
    limits set when it opens, so nothing in the statement can change them) and closes it after; the
    process may be the one that projects into the store, whose handle is not touched.
    """

    def __init__(self, settings: Settings, *, database: str | None = None, slots: int = 4) -> None:
        self.settings = settings
        self.database = database or settings.clickhouse_database
        self.limits = Limits.of(settings)
        self._slots = threading.BoundedSemaphore(slots)
        self._slot_count = slots

    def run(self, statement: str) -> list[dict[str, Any]]:
        if not self._slots.acquire(timeout=self.limits.seconds):
            raise Busy(f"the SQL box is running {self._slot_count} queries already; try again in a moment")
        try:
            with self._handle(readonly=2) as parser:
                canonical = admit(parser, statement, self.database)
            with self._handle(readonly=1) as runner:
                try:
                    result = runner.query(canonical)
                except Exception as exc:
                    raise QueryFailed(self.limits.explain(_code(exc), _first_line(exc))) from exc
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
        finally:
            self._slots.release()

    @contextmanager
    def _handle(self, *, readonly: int) -> Iterator[Any]:
        """``readonly=2``: the parser (it runs nothing of the statement); ``readonly=1``: the runner. A server's
        user (``AGENTLOG_CLICKHOUSE_ANALYST_URL``) gets the limits with each query; its settings profile holds
        its read-only mode (see the README)."""
        engine: dict[str, object] = ({"readonly": 2, "max_execution_time": _PARSE_TIMEOUT} if readonly == 2
                                     else self.limits.engine_settings())
        if not self.settings.embedded_clickhouse:
            engine.pop("readonly")
        client = clients.clickhouse(self.settings, database=self.database, engine_settings=engine,
                                    url=self.settings.clickhouse_analyst_url or None)
        try:
            yield client
        finally:
            client.close()


def _code(exc: Exception) -> int:
    match = re.search(r"Code: (\d+)", str(exc))
    return int(match.group(1)) if match else 0


def owner_file(settings: Settings) -> Path:
    return clients.chdb_path(settings.clickhouse_url).parent / "clickhouse-owner.json"


def run(settings: Settings, statement: str, *, box: SQLBox | None = None) -> list[dict[str, Any]]:
    """Run a statement in the box (``box``, this process's): here when the store is free, this process's or a
    server, else through the process holding it."""
    if settings.embedded_clickhouse and clients.chdb_owner(clients.chdb_path(settings.clickhouse_url)) not in (
            None, os.getpid()):
        return _through_owner(settings, statement)  # held by another process: ask it, not the engine
    try:
        return (box or SQLBox(settings)).run(statement)
    except StackError as exc:
        if not settings.embedded_clickhouse or isinstance(exc, Busy):
            raise
        return _through_owner(settings, statement)


def _through_owner(settings: Settings, statement: str) -> list[dict[str, Any]]:
    try:
        owner = json.loads(owner_file(settings).read_text())
        url, token = owner["url"], owner["token"]
    except (OSError, ValueError, KeyError, TypeError):
        raise StackError("clickhouse: the embedded store is held by another process that serves no queries; "
                         "stop it or run `agentlog serve`") from None
    request = urllib.request.Request(f"{url}/api/sql", data=json.dumps({"sql": statement}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=settings.sql_timeout + 30) as response:
            rows: list[dict[str, Any]] = json.loads(response.read())["rows"]
            return rows
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}").get("detail", str(exc))
        except ValueError:
            detail = str(exc)
        if exc.code == 503:
            raise StackError(detail) from None
        raise QueryFailed(detail) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StackError(f"clickhouse: the process holding the embedded store does not answer at {url}: "
                         f"{reason}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    match = re.search(r"DB::Exception: (.*?)(?:\(version|\n|$)", text)
    return (match.group(1) if match else (text.splitlines() or [type(exc).__name__])[0]).strip()
