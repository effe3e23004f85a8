"""A small query endpoint in the process that owns the embedded ClickHouse store.

The embedded engine (chDB) lets one process open a store. The projector process serves
``POST /api/sql`` on loopback and leaves its address in ``clickhouse-owner.json`` beside
the store, so ``agentlog sql`` in another process goes through it. The file (mode 0600, so only
the user who runs agentlog reads it) also holds a token made for this process: a request
without it is refused with 401.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics.queries import SQLBox, owner_file
from agentlog.schemas.errors import AgentlogError

MAX_BODY = 1 << 20


def advertise(settings: Settings, url: str, token: str) -> None:
    """Say where this process answers queries, and the bearer token it asks for (the file is mode 0600)."""
    path = owner_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({"pid": os.getpid(), "url": url, "token": token}))
    os.replace(temporary, path)


def withdraw(settings: Settings) -> None:
    try:
        if json.loads(owner_file(settings).read_text()).get("pid") == os.getpid():
            owner_file(settings).unlink()
    except (OSError, ValueError):
        pass


class QueryServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token = secrets.token_urlsafe(32)
        box = SQLBox(settings)
        expected = f"Bearer {self.token}"

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                if not hmac.compare_digest(self.headers.get("Authorization", ""), expected):
                    self._send(401, {"detail": "send the token of clickhouse-owner.json as a bearer "
                                               "(`agentlog sql` does)"})
                    return
                if self.path != "/api/sql":
                    self._send(404, {"detail": "POST /api/sql"})
                    return
                if self.headers.get_content_type() != "application/json" or self.headers.get("Origin"):
                    self._send(400, {"detail": "the body must be JSON (Content-Type: application/json), "
                                               "sent by agentlog itself, not a browser"})
                    return
                try:
                    length = int(self.headers.get("Content-Length", 0))
                    if not 0 <= length <= MAX_BODY:
                        raise ValueError(length)
                    body = json.loads(self.rfile.read(length) or b"{}")
                    statement = body.get("sql") if isinstance(body, dict) else None
                    if not isinstance(statement, str):
                        raise ValueError(statement)
                    self._send(200, {"rows": box.run(statement)})
                except StackError as exc:
                    self._send(503, {"detail": str(exc)})
                except AgentlogError as exc:
                    self._send(400, {"detail": str(exc)})
                except ValueError:
                    self._send(400, {"detail": f"the body must be JSON of at most {MAX_BODY:,} bytes: "
                                               "{\"sql\": \"SELECT ...\"}"})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="agentlog-sql", daemon=True)

    def start(self) -> None:
        self._thread.start()
        advertise(self.settings, self.url, self.token)

    def stop(self) -> None:
        withdraw(self.settings)
        self._server.shutdown()
        self._server.server_close()
