"""Analysts' SQL box: one statement that reads the analytics database and nothing else, within limits.

This is the second wall; the first is the process the statement runs in (``engine.py``). What a statement
may touch is decided by ClickHouse's own parser, never by keywords, and by allow-lists of what the box
knows (anything else is refused):
1. ``formatQuerySingleLine`` (the statement as a string literal: parsed, not run) gives its canonical
   text and refuses a second statement;
2. ``EXPLAIN AST`` of that text, run as a subquery (ClickHouse refuses ``INTO OUTFILE`` and ``FORMAT``
   there), gives its syntax tree, which is walked: every node a kind in ``NODES``, every function in
   ``functions.tsv`` (or an aggregate with its combinators), table functions from a short list that reads
   nothing (``numbers``), tables of the analytics database only, no ``SETTINGS``.
Then it runs on a handle opened with ``readonly=1`` and the limits (time, memory, result rows and bytes),
which the statement cannot change; the writer is never held meanwhile.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from clickhouse_connect.driver.client import Client

from agentlog.deploy import clients
from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.schemas.errors import AgentlogError

MAX_STATEMENT = 100_000
"""Characters of SQL the box takes."""
TABLE_FUNCTIONS = frozenset({"numbers", "zeros", "generate_series", "generateSeries"})
"""Table functions that read nothing but what they make."""
NODES = frozenset({
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "ExpressionList", "Subquery", "WithElement",
    "TablesInSelectQuery", "TablesInSelectQueryElement", "TableExpression", "TableIdentifier", "TableJoin",
    "ArrayJoin", "SampleRatio", "Identifier", "Literal", "Function", "Asterisk", "QualifiedAsterisk",
    "ColumnsRegexpMatcher", "ColumnsListMatcher", "QualifiedColumnsRegexpMatcher", "QualifiedColumnsListMatcher",
    "ColumnsTransformerList", "ColumnsExceptTransformer", "ColumnsReplaceTransformer",
    "ColumnsReplaceTransformer::Replacement", "OrderByElement", "InterpolateElement", "WindowDefinition",
    "WindowListElement"})
"""The kinds of ``EXPLAIN AST`` node the box knows; any other (``ColumnsApplyTransformer``, whose function has no
name in the tree, ``Set``, a query parameter ...) is refused."""
_COMBINATORS = ("If", "Array", "Map", "State", "Merge", "MergeState", "ForEach", "Distinct", "OrDefault", "OrNull",
                "Resample", "ArgMin", "ArgMax", "SimpleState")
_IN = frozenset({"in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "globalNullIn",
                 "globalNotNullIn"})
_DESCRIBE = re.compile(r"^DESCRIBE TABLE (?:(?P<db>\w+|`[^`]+`)\.)?(?P<table>\w+|`[^`]+`)$")
_PARSE_TIMEOUT = 5

Parse = Callable[[str, "dict[str, Any] | None"], "list[Sequence[Any]]"]
"""Runs a statement of the box's own (``formatQuerySingleLine``, ``EXPLAIN AST``) and returns its rows."""


@dataclass(frozen=True)
class Functions:
    """The functions analysts' SQL may call (``functions.tsv``): exact names, case-insensitive names, aggregates."""

    exact: frozenset[str]
    folded: frozenset[str]
    aggregates: frozenset[str]

    @classmethod
    def load(cls) -> "Functions":
        rows = [line.split("\t") for line in (Path(__file__).parent / "functions.tsv").read_text().splitlines()
                if line and not line.startswith("#")]
        return cls(frozenset(r[0] for r in rows), frozenset(r[0].lower() for r in rows if r[3] == "1"),
                   frozenset(r[0] for r in rows if r[2] == "1"))

    def allows(self, name: str) -> bool:
        return name in self.exact or name.lower() in self.folded or name == "lambda" or self.aggregate(name)

    def aggregate(self, name: str) -> bool:
        """An aggregate function, with any of its combinators (``sumIf``, ``uniqArrayIf``, ``avgOrNull`` ...)."""
        return name in self.aggregates or any(
            name.endswith(suffix) and len(name) > len(suffix) and self.aggregate(name[: -len(suffix)])
            for suffix in _COMBINATORS)


FUNCTIONS = Functions.load()


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
        """Sent with each query; the engine (or the server user's profile) holds ``readonly=1`` itself."""
        return {"max_execution_time": self.seconds, "max_memory_usage": self.memory,
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


def admit(parse: Parse, statement: str, database: str) -> str:
    """The statement's canonical text when the box may run it; NotReadOnly saying why when it may not.

    ``parse`` runs the box's own statements on a handle that runs nothing of the analyst's (``client_parse``).
    """
    sized(statement)
    canonical = str(_parse(parse, "SELECT formatQuerySingleLine({statement:String})", {"statement": statement})[0][0])
    if canonical.startswith("SHOW TABLES"):
        if canonical != "SHOW TABLES":
            raise NotReadOnly("SHOW TABLES lists the analytics database's tables; it takes no FROM, LIKE or options")
        return canonical
    describe = _DESCRIBE.match(canonical)
    if describe:
        _check_table(describe.group("db"), database)
        return canonical
    try:
        tree = [str(row[0]) for row in _parse(parse, f"SELECT explain FROM (EXPLAIN AST {canonical})", None)]
    except QueryFailed as exc:
        if "output options" in str(exc):
            raise NotReadOnly("INTO OUTFILE and FORMAT are not allowed: the box returns rows, it writes no file") \
                from None
        if "only SELECT" in str(exc):
            raise NotReadOnly("only SELECT (or WITH ... SELECT), SHOW TABLES and DESCRIBE TABLE run here") from None
        raise
    _walk(tree, database)
    return canonical


def sized(statement: str) -> str:
    """``statement`` when it is text of a size the box takes; NotReadOnly saying why when it is not."""
    if not isinstance(statement, str) or not statement.strip():
        raise NotReadOnly("no statement: write one SELECT over the analytics tables")
    if len(statement) > MAX_STATEMENT:
        raise NotReadOnly(f"the statement has {len(statement):,} characters; the box takes at most {MAX_STATEMENT:,}")
    if "\x00" in statement:
        raise NotReadOnly("the statement holds a NUL character")
    return statement


def client_parse(parser: Client) -> Parse:
    """``parse`` on a ClickHouse client (a server's analyst user), each statement within the parse's time limit."""
    def parse(query: str, parameters: dict[str, Any] | None) -> list[Sequence[Any]]:
        return list(parser.query(query, parameters=parameters,
                                 settings={"max_execution_time": _PARSE_TIMEOUT}).result_rows)
    return parse


def _parse(parse: Parse, query: str, parameters: dict[str, Any] | None) -> list[Sequence[Any]]:
    try:
        return parse(query, parameters)
    except Exception as exc:  # the driver's DatabaseError carries ClickHouse's own message
        if _code(exc) == 164:  # a read-only setting the statement would change (SETTINGS readonly = 0 ...)
            raise NotReadOnly(_first_line(exc)) from exc
        raise QueryFailed(_first_line(exc)) from exc


def _walk(tree: list[str], database: str) -> None:
    """Every node of ``EXPLAIN AST``'s tree (one a line, indented by depth) is one the box knows and allows."""
    if not tree or not tree[0].startswith("SelectWithUnionQuery"):
        raise NotReadOnly("only SELECT (or WITH ... SELECT), SHOW TABLES and DESCRIBE TABLE run here")
    nodes = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in tree]
    for i, (_, node) in enumerate(nodes):
        kind, _, rest = node.partition(" ")
        name = rest.split(" (", 1)[0]
        if kind == "Set":
            raise NotReadOnly("SETTINGS are not allowed: the box's limits are fixed (AGENTLOG_SQL_TIMEOUT, "
                              "AGENTLOG_SQL_MEMORY, AGENTLOG_SQL_ROWS, AGENTLOG_SQL_BYTES)")
        if kind == "ColumnsApplyTransformer":
            raise NotReadOnly("APPLY is not allowed: call the function on the column by name (f(x), not * APPLY f)")
        if kind not in NODES:
            raise NotReadOnly(f"{kind} is not something the box knows; write a plain SELECT over the analytics "
                              "tables")
        if kind == "TableIdentifier":
            if name != "system.one":  # where a SELECT without FROM reads its one row
                _check_table(_database_of(name), database)
        elif kind == "Function":
            _check_function(nodes, i, name, database)


def _check_function(nodes: list[tuple[int, str]], i: int, name: str, database: str) -> None:
    if _is_table_function(nodes, i):
        if name not in TABLE_FUNCTIONS:
            raise NotReadOnly(f"table function {name}() is not allowed: the box reads the analytics "
                              f"tables (and {', '.join(sorted(TABLE_FUNCTIONS))})")
    elif not FUNCTIONS.allows(name):
        raise NotReadOnly(f"function {name}() is not allowed: the box calls functions that compute on "
                          "the query's own values (functions.tsv lists them)")
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
    """Runs analysts' statements; at most ``slots`` at a time from this process.

    With the embedded store, the statement goes to its engine as the analyst principal: the engine admits it
    and runs it read-only within the limits, in a process walled off from every secret (``engine.py`` says
    how). With a ClickHouse server, this process admits it first, then runs it as the server's analyst user
    (``AGENTLOG_CLICKHOUSE_ANALYST_URL``, whose settings profile holds its read-only mode; see the README).
    """

    def __init__(self, settings: Settings, *, database: str | None = None, slots: int = 4) -> None:
        self.settings = settings
        self.database = database or settings.clickhouse_database
        self.limits = Limits.of(settings)
        self._slots = threading.BoundedSemaphore(slots)
        self._slot_count = slots

    def run(self, statement: str) -> list[dict[str, Any]]:
        result = self._ask(statement, lambda client, canonical: client.query(canonical))
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def export(self, statement: str, kind: str) -> bytes:
        """The statement's result as a file of ``kind`` (``FILE_FORMATS``: csv, parquet, jsonl), written by the
        engine. A result past the row or byte limit is refused whole (QueryFailed saying which), never cut."""
        fmt = FILE_FORMATS.get(kind)
        if fmt is None:
            raise QueryFailed(f"format {kind[:40]!r}: choose one of {', '.join(FILE_FORMATS)}")
        return bytes(self._ask(statement, lambda client, canonical: client.raw_query(canonical, fmt=fmt)))

    def _ask(self, statement: str, query: Callable[[Any, str], Any]) -> Any:
        sized(statement)
        if not self._slots.acquire(timeout=self.limits.seconds):
            raise Busy(f"the SQL box is running {self._slot_count} queries already; try again in a moment")
        try:
            client = clients.clickhouse(self.settings, database=self.database, analyst=self.settings.embedded_clickhouse,
                                        engine_settings=self.limits.engine_settings(),
                                        url=self.settings.clickhouse_analyst_url or None)
            try:
                canonical = statement if self.settings.embedded_clickhouse else admit(
                    client_parse(client), statement, self.database)
                return query(client, canonical)
            except AgentlogError:
                raise
            except Exception as exc:
                raise self._refusal(exc) from exc
            finally:
                client.close()
        finally:
            self._slots.release()

    def _refusal(self, exc: Exception) -> AgentlogError:
        """The engine's or server's refusal as the box says it: not allowed, busy, a limit, or ClickHouse's line."""
        code, line = _code(exc), _first_line(exc)
        if code == 164:
            return NotReadOnly(line)
        if code == 202:
            return Busy(line)
        return QueryFailed(self.limits.explain(code, line))


def _code(exc: Exception) -> int:
    match = re.search(r"Code: (\d+)", str(exc))
    return int(match.group(1)) if match else 0


FILE_FORMATS = {"csv": "CSVWithNames", "parquet": "Parquet", "jsonl": "JSONEachRow"}
"""The files the box writes results as: ClickHouse's format for each."""
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet",
               "jsonl": "application/x-ndjson"}


def run(settings: Settings, statement: str, *, box: SQLBox | None = None) -> list[dict[str, Any]]:
    """Run a statement in the box (``box``, this process's, or a new one)."""
    return (box or SQLBox(settings)).run(statement)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    match = re.search(r"DB::Exception: (.*?)(?:\. \([A-Z_]+\) \(version|\(version|\n|$)", text)
    return (match.group(1) if match else (text.splitlines() or [type(exc).__name__])[0]).strip()
