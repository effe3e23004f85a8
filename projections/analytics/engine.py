"""The analytics engine: the one process that holds the embedded ClickHouse store (chDB), answering
ClickHouse's HTTP protocol on loopback to two principals.

- the writer (the analytics projector, rebuild, verify, forget): any statement, any insert;
- the analyst (the SQL box, for every way analysts' SQL comes in): one statement the box admits
  (``queries.admit``), run on a handle opened ``readonly=1`` with the box's limits.

Why analysts' SQL is safe here even if the box's parser misses a case (the argument, wall by wall):
1. The process holds no secret. It is started with an empty environment and closes every inherited
   descriptor; its two tokens arrive on stdin and only their SHA-256 stays in memory. It has no Kafka,
   Postgres or Elasticsearch password and no master key: the projector feeds it rows over HTTP.
2. It runs as ``agentlog-sql`` (when started by root), a user that owns the store and nothing else, so the
   stack's ``secrets/`` (0700, root), ``/etc/shadow`` and other processes' ``/proc/PID/environ`` are closed.
3. Landlock (where the kernel has it) lets it open files beneath the store and read the interpreter's and
   the engine's libraries only: not ``/etc``, not ``/proc``, not the stack directory. It can neither connect
   to nor bind a TCP port (its one socket is bound before the wall) nor signal a process outside.
   Landlock binds the threads started after it: the ones chDB starts as it is imported, before the walls
   (importing it inside them fails: it reads /proc and makes a server in /tmp), run as the user only;
   the queries run on threads started later (the tests' corpus reads no file, /etc/passwd included).
4. The analyst's handle is ``readonly=1`` with time, memory and result limits set when it opens.
What a query that got past the parser could still reach: the analytics store itself, which the log rebuilds.
Where walls 2 and 3 are both missing, the engine says so on start, in its announcement and in
``agentlog stack status``.

Run as ``python -m agentlog.projections.analytics.engine`` by ``deploy.engine`` (never by hand); its
configuration is one JSON line on stdin, and it answers with one JSON line on stdout once it listens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import resource
import socket
import sys
import threading
import time
import uuid
from base64 import b64decode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import chdb

from agentlog.deploy import walls
from agentlog.deploy.http_body import BodyTooLarge, MalformedBody, read_body
from agentlog.projections.analytics.queries import MAX_STATEMENT, NotReadOnly, QueryFailed, admit

WRITER, ANALYST = "agentlog", "analyst"
MAX_INSERT = 1 << 30
"""Bytes of one insert's body the writer may send."""
ANALYST_SLOTS = 4
"""Analysts' queries running at once; the next one is refused as ClickHouse refuses it (code 202)."""
ANALYST_FORMATS = frozenset({
    "Native", "RowBinary", "RowBinaryWithNames", "RowBinaryWithNamesAndTypes", "JSON", "JSONCompact",
    "JSONEachRow", "JSONCompactEachRow", "JSONStrings", "TabSeparated", "TSV", "TabSeparatedWithNames",
    "TSVWithNames", "TabSeparatedWithNamesAndTypes", "TSVWithNamesAndTypes", "CSV", "CSVWithNames",
    "CSVWithNamesAndTypes", "Parquet", "Arrow", "ArrowStream", "Values", "Pretty", "PrettyCompact"})
LIMIT_SETTINGS = ("max_execution_time", "max_memory_usage", "max_result_rows", "max_result_bytes")
"""The settings an analyst's caller (an agentlog process holding the analyst token) chooses; nothing else."""
ANALYST_SETTINGS = {"readonly": "1", "allow_introspection_functions": "0", "allow_ddl": "0",
                    "result_overflow_mode": "throw", "timeout_overflow_mode": "throw",
                    "max_threads": str(max(1, (os.cpu_count() or 1) // ANALYST_SLOTS))}
"""Set on every analyst handle as it opens: a statement cannot change them (``readonly=1``). Threads a query: the
CPUs shared among the four slots (at least one), so that analysts together take at most every CPU once and the
writer's inserts are not queued behind eight threads on two CPUs."""
YIELDING = {"os_thread_priority": "19"}
"""Analysts' query threads at the lowest CPU priority (nice 19): the writer's inserts, the other projectors and
the services go first when the CPUs are busy. Only where a thread may go back to nice 0 afterwards (ClickHouse
does, and stops the process when it cannot): as root, or with ``RLIMIT_NICE`` at 20, which ``main`` sets
while still root (it lets the engine come back to nice 0, never below)."""
HANDSHAKE = frozenset({"SELECT version(), timezone()", "SELECT name, value, readonly FROM system.settings LIMIT 10000",
                       "SELECT version() as server_version"})
"""What a ClickHouse client asks on connecting (clickhouse-connect; the JDBC driver): answered as is, for the analyst
too."""
TRANSPORT = frozenset({"query", "database", "default_format", "user", "password", "session_id", "session_timeout",
                       "session_check", "query_id", "quota_key", "compress", "decompress", "wait_end_of_query",
                       "buffer_size", "client_protocol_version", "role", "send_progress_in_http_headers",
                       "http_headers_progress_interval_ms", "enable_http_compression"})
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\b", re.IGNORECASE)
_INSERT_HEAD = re.compile(rb"^(\s*INSERT\b[^\n]{0,65536}?\bFORMAT\s+\w+)[ \t]*\r?\n", re.IGNORECASE)
_CODE = re.compile(r"Code: (\d+)")
_NAME = re.compile(r"\(([A-Z_]+)\)\s*$")


class Engine:
    def __init__(self, store: Path, *, writer: str, analyst: str, unchecked: bool = False,
                 yielding: bool = False) -> None:
        """``yielding``: analysts' queries run at nice 19 (see YIELDING)."""
        self.store = store
        self.analyst_settings = {**ANALYST_SETTINGS, **(YIELDING if yielding else {})}
        self._digests = {WRITER: writer, ANALYST: analyst}
        self.unchecked = unchecked
        """Test-only: analysts' statements run without the parser, to show the walls hold by themselves."""
        self.connection = chdb.connect(str(store))  # type: ignore[no-untyped-call]
        self.version = str(self.connection.query("SELECT version()", "TSV").bytes().decode().strip())
        self.slots = threading.BoundedSemaphore(ANALYST_SLOTS)
        self.last_request = time.monotonic()
        self.active = 0
        """Requests under way (the idle stop waits for none)."""
        self.busy = threading.Lock()

    def principal(self, user: str, key: str) -> str | None:
        digest = self._digests.get(user)
        if digest is None:
            return None
        return user if hmac.compare_digest(hashlib.sha256(key.encode()).hexdigest(), digest) else None

    def handle(self, settings: dict[str, str]) -> Any:
        return chdb.connect(  # type: ignore[no-untyped-call]
            f"{self.store}?{urlencode(settings)}" if settings else str(self.store))

    def write(self, sql: str, data: bytes | None, *, database: str, settings: dict[str, str],
              parameters: dict[str, str], fmt: str) -> bytes:
        handle = self.handle(settings)
        staged: Path | None = None
        try:
            if database != "default":
                handle.query(f"USE `{database.replace('`', '')}`", "TSV")
            if data is not None:
                staged = self.store / "tmp" / f"insert-{uuid.uuid4().hex}"
                staged.parent.mkdir(exist_ok=True)
                staged.write_bytes(data)
                sql = _FORMAT.sub(lambda m: f"FROM INFILE '{staged}' FORMAT {m.group(1)}", sql)
            return bytes(handle.query(sql, fmt, params=parameters).bytes() or b"")
        finally:
            handle.close()
            if staged is not None:
                staged.unlink(missing_ok=True)

    def answer(self, statement: str, *, database: str, limits: dict[str, str], fmt: str) -> bytes:
        """An analyst's statement: admitted by the box, then run read-only within the limits."""
        if statement in HANDSHAKE:
            return self.write(statement, None, database="default", settings={}, parameters={}, fmt=fmt)
        if not self.slots.acquire(blocking=False):
            raise _Refused(202, "TOO_MANY_SIMULTANEOUS_QUERIES",
                           f"the SQL box is running {ANALYST_SLOTS} queries already; try again in a moment")
        try:
            canonical = statement if self.unchecked else admit(self._parse(database), statement, database)
            handle = self.handle({**limits, **self.analyst_settings})
            try:
                if database != "default":
                    handle.query(f"USE `{database.replace('`', '')}`", "TSV")
                return bytes(handle.query(canonical, fmt).bytes() or b"")
            finally:
                handle.close()
        finally:
            self.slots.release()

    def _parse(self, database: str) -> Any:
        def parse(query: str, parameters: dict[str, Any] | None) -> list[list[Any]]:
            for name, value in (parameters or {}).items():  # as a string literal: chDB's own binding cuts at a newline
                query = query.replace(f"{{{name}:String}}", _literal(str(value)))
            handle = self.handle({"readonly": "2", "max_execution_time": "5"})
            try:
                body = handle.query(query, "JSONCompact").bytes()
            finally:
                handle.close()
            return list(json.loads(body)["data"])
        return parse


def _literal(text: str) -> str:
    """``text`` as a ClickHouse string literal (the box refused NUL before)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Refused(Exception):
    def __init__(self, code: int, name: str, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.code, self.name, self.status = code, name, status


class Handler(BaseHTTPRequestHandler):
    """One request of ClickHouse's HTTP protocol: ``/ping``, or a query in the URL and/or the body."""

    server: "EngineServer"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        engine = self.server.engine
        with engine.busy:
            engine.active += 1
        try:
            self._answer()
        finally:
            with engine.busy:
                engine.active -= 1
                engine.last_request = time.monotonic()

    def _answer(self) -> None:
        url = urlsplit(self.path)
        if url.path not in ("/ping", "/"):
            self.close_connection = True
            return self._send(404, b"Not found: /ping or /\n")
        if url.path == "/ping" or (self.command == "GET" and not url.query):
            return self._send(200, b"Ok.\n")
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        try:  # who asks, before anything of the body is read
            principal = self._principal(params)
            body = self._body(MAX_INSERT if principal == WRITER else 4 * MAX_STATEMENT)
        except _Refused as exc:
            self.close_connection = True
            return self._error(exc)
        try:
            self._send(200, *self._query(principal, params, body))
        except _Refused as exc:
            self._error(exc)
        except NotReadOnly as exc:
            self._error(_Refused(164, "READONLY", str(exc), 400))
        except QueryFailed as exc:
            self._error(_Refused(_code(str(exc)) or 62, "SYNTAX_ERROR", str(exc), 400))
        except Exception as exc:  # chDB's errors carry ClickHouse's code and message: the statement's, a 400
            message = str(exc).strip()
            code = _code(message)
            self._error(_Refused(code or 1001, _name(message), _message(message), 400 if code else 500))

    def _query(self, principal: str, params: dict[str, str], body: bytes) -> tuple[bytes, dict[str, str]]:
        database = params.get("database") or "default"
        text = params.get("query", "")
        data: bytes | None = None
        if principal == WRITER and not text and _INSERT.match(body[:16].decode("ascii", "replace")):
            head = _INSERT_HEAD.match(body)  # INSERT INTO t (...) FORMAT Native\n, then the data
            if head is not None:
                text, body = head.group(1).decode(), body[head.end():]
        if principal == WRITER and text and body and _INSERT.match(text):
            sql, data = text, body
        else:
            sql = " ".join(part for part in (text, body.decode("utf-8", "replace")) if part)
        match = _FORMAT.search(sql)
        fmt = match.group(1) if match else params.get("default_format") or "TabSeparated"
        settings = {k: v for k, v in params.items() if k not in TRANSPORT and not k.startswith("param_")}
        if principal == WRITER:
            parameters = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            result = self.server.engine.write(sql, data, database=database, settings=settings,
                                              parameters=parameters, fmt=fmt)
        else:
            if fmt not in ANALYST_FORMATS:
                raise _Refused(73, "UNKNOWN_FORMAT", f"format {fmt} is not one the SQL box answers in", 400)
            if database.lower() in ("system", "information_schema"):
                raise _Refused(164, "READONLY", f"the SQL box reads the analytics database, not {database}", 400)
            statement = sql[:match.start()].strip() if match else sql.strip()
            limits = {k: v for k, v in settings.items() if k in LIMIT_SETTINGS}
            result = self.server.engine.answer(statement, database=database, limits=limits, fmt=fmt)
        return result, {"X-ClickHouse-Format": fmt}

    def _principal(self, params: dict[str, str]) -> str:
        user = self.headers.get("X-ClickHouse-User") or params.get("user", "")
        key = self.headers.get("X-ClickHouse-Key") or params.get("password", "")
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            try:
                user, _, key = b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                pass
        principal = self.server.engine.principal(user, key)
        if principal is None:
            raise _Refused(516, "AUTHENTICATION_FAILED", f"{user or 'default'}: Authentication failed: password "
                           "is incorrect, or there is no user with such name", 403)
        return principal

    def _body(self, limit: int) -> bytes:
        try:
            return read_body(self.rfile, self.headers, limit)
        except BodyTooLarge as exc:
            raise _Refused(27, "CANNOT_PARSE_INPUT", str(exc), 413) from None
        except MalformedBody as exc:
            raise _Refused(27, "CANNOT_PARSE_INPUT", str(exc), 400) from None

    def _error(self, exc: _Refused) -> None:
        text = f"Code: {exc.code}. DB::Exception: {exc}. ({exc.name}) (version {self.server.engine.version})\n"
        self._send(exc.status, text.encode(), {"X-ClickHouse-Exception-Code": str(exc.code)})
        if exc.status == 413:
            self.close_connection = True

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Timezone": "UTC",
                            "X-ClickHouse-Summary": '{"read_rows":"0","written_rows":"0"}',
                            "Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EngineServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listener: socket.socket, engine: Engine) -> None:
        super().__init__(listener.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.engine = engine


def _code(message: str) -> int:
    match = _CODE.search(message)
    return int(match.group(1)) if match else 0


def _name(message: str) -> str:
    match = _NAME.search(message.split("(version")[0].strip())
    return match.group(1) if match else "UNKNOWN_EXCEPTION"


def _message(message: str) -> str:
    """ClickHouse's message without its code, exception prefix and name (``_error`` adds them back)."""
    text = message.split("DB::Exception: ", 1)[-1].split("DB::ErrnoException: ", 1)[-1]
    return _NAME.sub("", text.split("(version")[0].strip()).strip().rstrip(".")


def _idle(server: ThreadingHTTPServer, engine: Engine, idle: float, store: int) -> None:
    """Stop when nobody asked anything for ``idle`` seconds (0: never), or when the store is gone: removed
    (``store``, a descriptor of its folder, then has no link left) or out of reach."""
    while True:
        time.sleep(1)
        try:
            gone = os.fstat(store).st_nlink == 0 or not engine.store.is_dir()
        except OSError:  # a parent folder closed to the engine's user: nobody can use this store any more
            gone = True
        with engine.busy:
            quiet = not engine.active and time.monotonic() - engine.last_request > idle
        if gone or (idle and quiet):
            server.shutdown()
            return


def main() -> None:
    config = json.loads(sys.stdin.readline())
    store = Path(config["store"])
    listener = socket.create_server(("127.0.0.1", 0))
    readable = [Path(p) for p in config["readable"]]
    try:  # a thread of analysts' SQL at nice 19 may come back to 0, never below (as root: before leaving it)
        resource.setrlimit(resource.RLIMIT_NICE, (20, 20))
    except (ValueError, OSError):
        pass
    wall = walls.enter(user=config.get("user"), writable=[store, Path("/dev/null")], readable=readable)
    if not wall.enough:
        print(f"agentlog engine: analysts' SQL runs without a wall around it ({wall.describe()}): run as root "
              "on a kernel with Landlock", file=sys.stderr, flush=True)
    yielding = os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20
    if yielding:
        wall.up.append("analysts' SQL at nice 19")
    else:
        wall.missing.append("analysts' SQL at nice 19 (RLIMIT_NICE below 20: run as root)")
    engine = Engine(store, writer=config["writer"], analyst=config["analyst"], unchecked=bool(config.get("unchecked")),
                    yielding=yielding)
    server = EngineServer(listener, engine)
    port = listener.getsockname()[1]
    print(json.dumps({"port": port, "walls": wall.describe(), "walled": wall.enough}), flush=True)
    sys.stdout.close()
    held = os.open(store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    threading.Thread(target=_idle, args=(server, engine, float(config.get("idle", 0)), held), daemon=True).start()
    server.serve_forever()
    engine.connection.close()


if __name__ == "__main__":
    main()
