"""A small query endpoint in the process that owns the embedded ClickHouse store.

The embedded engine (chDB) lets one process open a store. The projector process serves
``POST /api/sql`` on loopback and leaves its address in ``clickhouse-owner.json`` beside
the store, so ``agentlog sql`` in another process goes through it.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agentlog.deploy.settings import Settings
from agentlog.projections.analytics.projection import AnalyticsProjection
from agentlog.projections.analytics.queries import owner_file, run_local
from agentlog.schemas.errors import AgentlogError


def run_owned(projection: AnalyticsProjection, statement: str) -> list[dict]:
    with projection.lock:
        return run_local(projection.analyst_client, statement)


def advertise(settings: Settings, url: str) -> None:
    owner_file(settings).parent.mkdir(parents=True, exist_ok=True)
    owner_file(settings).write_text(json.dumps({"pid": os.getpid(), "url": url}))


def withdraw(settings: Settings) -> None:
    try:
        if json.loads(owner_file(settings).read_text()).get("pid") == os.getpid():
            owner_file(settings).unlink()
    except (OSError, ValueError):
        pass


class QueryServer:
    def __init__(self, settings: Settings, projection: AnalyticsProjection) -> None:
        self.settings = settings
        projection_ref = projection

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                if self.path != "/api/sql":
                    self._send(404, {"detail": "POST /api/sql"})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                    self._send(200, {"rows": run_owned(projection_ref, body.get("sql", ""))})
                except AgentlogError as exc:
                    self._send(400, {"detail": str(exc)})
                except ValueError:
                    self._send(400, {"detail": "the body must be JSON: {\"sql\": \"SELECT ...\"}"})

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="agentlog-sql", daemon=True)

    def start(self) -> None:
        self._thread.start()
        advertise(self.settings, self.url)

    def stop(self) -> None:
        withdraw(self.settings)
        self._server.shutdown()
        self._server.server_close()
