"""One ``agentlog serve`` for the web tests, on a sandbox holding the two scenarios and some traffic."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from agentlog.consumers.cli.demo import record_refund, run_book_demo
from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import Settings
from agentlog.producers.traffic import send
from tests.conftest import ROOT, env_of

SIMULATED = 30


@dataclass
class Served:
    url: str
    settings: Settings
    env: dict[str, str]
    refund_id: str
    saga_id: str
    events: int
    """Events appended before the server started."""
    token: str
    """An admin's API token: every call below sends it, unless given another (``None``: nobody's)."""
    admin: tuple[str, str]
    """An admin user's name and password, for the browser's login."""
    log: Path | None = None
    """What the server printed."""
    clickhouse_port: int = 0
    """Where ClickHouse's HTTP protocol answers."""

    def auth(self, token: str | None | object = ...) -> dict[str, str]:
        token = self.token if token is ... else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, *, token: str | None | object = ...) -> tuple[int, Any]:
        """Status and decoded JSON body of a GET."""
        return _call(urllib.request.Request(self.url + path, headers=self.auth(token)))

    def post(self, path: str, body: dict[str, Any], *, token: str | None | object = ...) -> tuple[int, Any]:
        return _call(urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                            headers={"Content-Type": "application/json", **self.auth(token)}))

    def text(self, path: str) -> str:
        request = urllib.request.Request(self.url + path, headers=self.auth())
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()

    def token_for(self, role: str) -> str:
        """A new token of ``role``."""
        return AuthStore(self.settings).create_token(role)[1]


def _call(request: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _record(settings: Settings) -> tuple[str, str, int]:
    refund_id = await record_refund(settings)
    saga_id, _ = await run_book_demo(settings)
    summary = await send(settings, SIMULATED, seed=7)
    return refund_id, saga_id, summary["events"]


@pytest.fixture(scope="package")
def served(stack: Settings, tmp_path_factory) -> Served:
    """``agentlog serve`` in a subprocess, its projectors caught up with what was appended."""
    store = tmp_path_factory.mktemp("clickhouse")
    world = replace(private(stack, uuid.uuid4().hex[:12]), clickhouse_url=f"chdb://{store}/clickhouse")
    world = replace(world, sql_timeout=8.0)
    spool = tmp_path_factory.mktemp("spool")
    world = replace(world, spool_dir=spool)
    env = {**env_of(world), "AGENTLOG_SQL_TIMEOUT": "8", "AGENTLOG_SPOOL_DIR": str(spool)}
    refund_id, saga_id, simulated = asyncio.run(_record(world))
    auth = AuthStore(world)
    auth.setup()
    _, token = auth.create_token("admin", name="tests")
    admin = ("ada", auth.add_user("ada", "admin"))
    port, clickhouse_port = free_port(), free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    log = log_path.open("w+")
    process = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "serve", "--port", str(port),
                                "--clickhouse-port", str(clickhouse_port)],
                               env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", world, env, refund_id, saga_id, simulated + 9 + 9, token, admin,
                    log_path, clickhouse_port)
    try:
        _wait_caught_up(served, process, log)
        yield served
    finally:
        process.terminate()
        process.wait(60)
        log.close()
        drop(world)


def _wait_caught_up(served: Served, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"agentlog serve exited with {process.returncode}: {log.read()}")
        try:
            status, counters = served.get("/api/counters")
            _, lag = served.get("/api/lag")
            _, everything = served.get("/api/search?q=*&limit=1")  # Elasticsearch shows writes after a refresh
            if status == 200 and counters["events"] >= served.events and \
                    all(n == 0 for parts in lag.values() for n in parts.values()) and \
                    everything.get("total") == counters["conversations"]:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.5)
    log.seek(0)
    pytest.fail(f"agentlog serve did not catch up in 120 s: {log.read()}")
