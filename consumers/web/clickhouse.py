"""ClickHouse's HTTP protocol on ``agentlog serve`` (port 8123): analysts' own tools on the embedded store.

A request is answered as a ClickHouse server answers a read-only user: ``/ping``; a query in the URL
(``query``) and/or the body, ``database``, ``default_format`` and a ``FORMAT`` clause; what a client asks on
connecting (its version and time zone, the server's settings); errors in ClickHouse's form (``Code: N.
DB::Exception: ...``, ``X-ClickHouse-Exception-Code``); the format and database also as the headers
``X-ClickHouse-Format`` / ``X-ClickHouse-Database`` (the Java client sends them so); a gzip-compressed answer
when the client asks for one (``enable_http_compression=1`` and ``Accept-Encoding: gzip``), or ClickHouse's own
compressed blocks (``compress=1``: LZ4 under a CityHash128 checksum, which the Java client asks for by default).

Who: users and tokens of the analyst and admin roles, by HTTP basic auth, ClickHouse's ``X-ClickHouse-User`` /
``X-ClickHouse-Key`` headers, or ``user`` / ``password`` in the URL; a token works as the password (whatever the
user name). A wrong password counts toward the login page's lockout; a right one is remembered for a minute
(checking its hash costs tens of milliseconds, a query may take less). Anyone else gets ClickHouse's
authentication error (516).

What: the request goes on to the engine as the SQL box's principal, on the analytics database (another is
ClickHouse's UNKNOWN_DATABASE), with the box's limits in place of any the client sent; the engine admits the statement with the box's parser and runs it read-only behind its walls
(``projections/analytics/engine.py``), so what a client may do here is exactly what the SQL box allows. A
client's ``readonly`` other than 1 is refused as ClickHouse refuses it (164). The engine runs four analysts'
queries at once (whichever way they came); the next one here waits for a slot as long as a query may run
(the box's time limit), then gets ClickHouse's refusal (202, TOO_MANY_SIMULTANEOUS_QUERIES).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import struct
import threading
import time
import zlib
from base64 import b64decode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import socket
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

from agentlog.consumers.web.auth import AuthStore
from agentlog.consumers.web.auth.roles import Principal, Role
from agentlog.consumers.web.auth.store import TOKEN_PREFIX, BadCredentials
from agentlog.deploy import engine
from agentlog.deploy.clients import chdb_path
from agentlog.deploy.http_body import BodyTooLarge, MalformedBody, read_body
from agentlog.deploy.settings import Settings
from agentlog.projections.reads import sql

log = logging.getLogger("agentlog.auth")

PORT = 8123
MAX_BODY = 1 << 20
"""Bytes of a request's body (a query, with its data when a client sends some), after decompression."""
LINGER = 8 << 20
"""Bytes of an unread body read and dropped after a refusal, before the connection is closed."""
REMEMBERED = 60.0
"""Seconds a checked password or token is taken again without asking Postgres."""
ALLOWED = frozenset({Role.ANALYST, Role.ADMIN})
_LIMITS = frozenset({"max_execution_time", "max_memory_usage", "max_result_rows", "max_result_bytes",
                     "result_overflow_mode", "timeout_overflow_mode", "readonly"})
"""What the client may not set: the box's limits go in their place."""
_RELAYED = ("Content-Type", "X-ClickHouse-Format", "X-ClickHouse-Timezone", "X-ClickHouse-Summary",
            "X-ClickHouse-Exception-Code")
_HEADERS = {"X-ClickHouse-Format": "default_format", "X-ClickHouse-Database": "database"}
"""Settings a client may send as headers instead of in the URL (the URL's win)."""
BLOCK = 1 << 20
"""Bytes of an answer per compressed block (``compress=1``), as ClickHouse's ``max_compress_block_size``."""
_LZ4 = 0x82


def compressed_blocks(data: bytes) -> bytes:
    """``data`` in ClickHouse's own compressed blocks: each a CityHash128 (v1.0.2) of what follows, the method
    (0x82, LZ4), the block's size with its 9-byte header, the data's size, then the LZ4 block."""
    out = bytearray()
    for start in range(0, max(len(data), 1), BLOCK):
        chunk = data[start:start + BLOCK]
        packed = lz4.block.compress(chunk, store_size=False)
        block = struct.pack("<BII", _LZ4, len(packed) + 9, len(chunk)) + packed
        checksum = CityHash128(block)
        out += struct.pack("<QQ", checksum >> 64, checksum & 0xFFFF_FFFF_FFFF_FFFF) + block
    return bytes(out)


class Refused(Exception):
    def __init__(self, code: int, name: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.name, self.status = code, name, status


class Front(ThreadingHTTPServer):
    """The listener, on a socket ``serve`` bound; ``start`` serves it on a thread of its own."""

    daemon_threads = True

    def __init__(self, settings: Settings, auth: AuthStore, listener: socket) -> None:
        super().__init__(listener.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.settings = settings
        self.auth = auth
        self.limits = {name: str(value) for name, value in sql.Limits.of(settings).engine_settings().items()}
        self._known: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="agentlog-clickhouse", daemon=True)

    def start(self) -> "Front":
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def principal(self, user: str, key: str) -> Principal:
        """Who ``user`` with ``key`` (a password, or a token) is; Refused (516) for anyone but an analyst or admin."""
        remembered = hashlib.sha256(f"{user}\x00{key}".encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        with self._lock:
            found = self._known.get(remembered)
        if found is not None and found[1] > now:
            return found[0]
        try:
            principal = self.auth.token(key) if key.startswith(TOKEN_PREFIX) else None
            if principal is None:
                principal = self.auth.check_password(user, key)
        except BadCredentials as exc:
            raise Refused(516, "AUTHENTICATION_FAILED", f"{user or 'default'}: Authentication failed: {exc}",
                          403) from None
        if principal.role not in ALLOWED:
            log.warning("clickhouse protocol refused %s %s (role %s)", principal.kind, principal.name, principal.role)
            raise Refused(516, "AUTHENTICATION_FAILED", f"{user or principal.name}: Authentication failed: the "
                          f"{principal.role} role may not query analytics (analysts and admins may)", 403)
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[remembered] = (principal, now + REMEMBERED)
        return principal


class _Handler(BaseHTTPRequestHandler):
    server: Front
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/ping" or (url.path == "/" and self.command == "GET" and not url.query):
            return self._send(200, b"Ok.\n", {})
        try:
            if url.path != "/":
                raise Refused(1001, "UNKNOWN_EXCEPTION", f"there is no handler for {url.path[:100]}: use / or /ping",
                              404)
            try:
                params = parse_qsl(url.query, keep_blank_values=True, strict_parsing=True, max_num_fields=200)
            except ValueError as exc:
                raise Refused(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", f"a malformed query string ({exc})") from None
            named = {name for name, _ in params}
            params += [(setting, value) for header, setting in _HEADERS.items()
                       if (value := self.headers.get(header)) is not None and setting not in named]
            if dict(params).get("decompress", "0") not in ("0", ""):
                raise Refused(1001, "UNKNOWN_EXCEPTION", "decompress=1 (a body in ClickHouse's own compressed "
                              "blocks) is not taken here: send the body plain or with Content-Encoding gzip")
            self._who(dict(params))
            body = self._body()
        except Refused as exc:
            self.close_connection = True  # the body may be left unread: nothing more is read from this connection
            self._error(exc)
            return self._linger()
        try:
            status, headers, data = self._forward(params, body)
        except Refused as exc:
            return self._error(exc)
        except (OSError, http.client.HTTPException) as exc:
            return self._error(Refused(210, "NETWORK_ERROR", f"the analytics engine does not answer ({exc}); "
                                       "`agentlog stack up` starts it again", 503))
        self._send(status, data, headers)

    def _who(self, params: dict[str, str]) -> Principal:
        user = self.headers.get("X-ClickHouse-User") or params.get("user", "")
        key = self.headers.get("X-ClickHouse-Key") or params.get("password", "")
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            try:
                user, _, key = b64decode(basic[6:], validate=True).decode().partition(":")
            except ValueError:
                raise Refused(516, "AUTHENTICATION_FAILED", "a malformed basic authorization header", 403) from None
        elif basic.startswith("Bearer "):
            key = basic[7:]
        if not key:
            raise Refused(516, "AUTHENTICATION_FAILED", f"{user or 'default'}: Authentication failed: a password "
                          "or token is needed (an analyst's or admin's)", 403)
        return self.server.principal(user, key)

    def _body(self) -> bytes:
        try:
            raw = read_body(self.rfile, self.headers, MAX_BODY)
        except BodyTooLarge as exc:
            raise Refused(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", str(exc), 413) from None
        except MalformedBody as exc:
            raise Refused(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", str(exc), 400) from None
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding not in ("gzip", "deflate"):
            raise Refused(1001, "UNKNOWN_EXCEPTION", f"Unknown HTTP compression method {encoding[:40]!r}: "
                          "send gzip, deflate or none", 400)
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        try:
            data = inflater.decompress(raw, MAX_BODY + 1)
        except zlib.error as exc:
            raise Refused(1001, "UNKNOWN_EXCEPTION", f"a {encoding} body that does not inflate ({exc})") from None
        if len(data) > MAX_BODY:
            raise Refused(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", f"a body over {MAX_BODY:,} bytes inflated", 413)
        return data

    def _forward(self, params: list[tuple[str, str]], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """The request to the engine as the SQL box's principal, the box's limits in place of the client's."""
        for name, value in params:
            if name == "readonly" and value.strip() not in ("1", ""):
                raise Refused(164, "READONLY", "Cannot modify 'readonly' setting in readonly mode", 400)
        server = self.server
        database = server.settings.clickhouse_database
        for name, value in params:
            if name == "database" and value not in ("", "default", database):
                raise Refused(81, "UNKNOWN_DATABASE", f"Database {value[:100]} does not exist: analysts read "
                              f"{database}", 404)
        kept = [(k, v) for k, v in params
                if k not in _LIMITS and k not in ("user", "password", "database", "compress", "decompress")]
        kept.append(("database", database))
        endpoint = engine.ensure(chdb_path(server.settings.clickhouse_url))
        seconds = float(server.limits["max_execution_time"])
        deadline = time.monotonic() + seconds
        while True:  # the engine's four slots taken: wait for one, as long as a query may take, then say so
            connection = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=seconds + 30)
            try:
                connection.request("POST", "/?" + urlencode(kept + list(server.limits.items())), body=body,
                                   headers={"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": endpoint.analyst,
                                            "Content-Length": str(len(body))})
                response = connection.getresponse()
                data = response.read()
            finally:
                connection.close()
            if response.getheader("X-ClickHouse-Exception-Code") != "202" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        headers = {name: found for name in _RELAYED if (found := response.getheader(name)) is not None}
        return response.status, headers, data

    def _linger(self) -> None:
        """Read and drop what the client may still be sending (at most LINGER bytes, for a second at most), so that
        a client that sends its whole body before reading gets the refusal rather than a reset connection."""
        deadline, left = time.monotonic() + 1.0, LINGER
        try:
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:
            return

    def _error(self, exc: Refused) -> None:
        text = f"Code: {exc.code}. DB::Exception: {exc}. ({exc.name}) (version agentlog)\n"
        self._send(exc.status, text.encode(), {"X-ClickHouse-Exception-Code": str(exc.code),
                                               "Content-Type": "text/plain; charset=UTF-8"})

    def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        """An answer, compressed as the client asked; an error is sent plain (as ClickHouse sends it)."""
        asked = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        if status == 200 and asked.get("compress", "") == "1":
            data = compressed_blocks(data)
        wanted = asked.get("enable_http_compression", "")
        if wanted == "1" and "gzip" in self.headers.get("Accept-Encoding", "") and len(data) > 256:
            data = gzip.compress(data, compresslevel=3)
            headers = {**headers, "Content-Encoding": "gzip"}
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Timezone": "UTC",
                            **headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass
