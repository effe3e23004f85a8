"""``agentlog serve``: the web application, and the projectors, each in a process of its own.

With embedded ClickHouse this process holds the store (one process may open it), so its analytics
queries go through the projection's client, and ``agentlog sql`` in another process is sent here.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from typing import Any, Callable

import uvicorn

from agentlog.consumers.auth import AuthStore, Principal, Role
from agentlog.consumers.ingest import Ingest
from agentlog.consumers.projectors import ProjectorThreads
from agentlog.consumers.read_models import ReadModels
from agentlog.consumers.supervisor import Supervisor
from agentlog.consumers.web.app import create_app, create_ingest_app
from agentlog.deploy import clients
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.local.stack import Stack
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics.server import advertise, withdraw
from agentlog.projections.registry import NAMES
from agentlog.schemas.errors import AgentlogError


def check_stack(settings: Settings) -> None:
    """One line naming the first service that does not answer, and what to do about it."""
    for service in Stack(settings).status():
        if not service.healthy:
            raise ServiceUnreachable(service.name, service.address,
                                     "run `agentlog stack up` (or point AGENTLOG_* at a running one)")
    if settings.embedded_clickhouse:
        path = clients.chdb_path(settings.clickhouse_url)
        owner = clients.chdb_owner(path)
        if owner is not None and owner != os.getpid():
            raise StackError(f"clickhouse: the embedded store {path} is held by process {owner} (`agentlog project`?); "
                             "stop it: `agentlog serve` runs the projectors itself")


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything starts, so a taken port is one clear line."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AgentlogError(f"{host}:{port} is already in use; stop what listens there or pick another "
                                "port with --port") from None
        raise AgentlogError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, projectors: bool = True,
          ingesting: bool = True, ready: Callable[[str], None] = lambda url: None) -> None:
    """Run until interrupted (SIGINT or SIGTERM); ``ready`` gets the URL once the socket listens."""
    check_stack(settings)
    sock = listen(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    here = ["analytics"] if settings.embedded_clickhouse else []  # chDB: the store is this process's alone
    group = ProjectorThreads(settings, here) if projectors and here else None
    supervisor = Supervisor([n for n in NAMES if n not in here]) if projectors else None
    owner = group.projection("analytics") if group is not None else None
    models = ReadModels(settings, analytics=owner)
    auth = AuthStore(settings)
    auth.setup()
    local = secrets.token_urlsafe(32)
    """What ``agentlog sql`` of another process sends (it reads it from the owner file, mode 0600)."""
    ingest = Ingest(settings).start() if ingesting else None
    def status() -> dict[str, Any]:
        return {**(supervisor.status() if supervisor is not None else {}),
                **(group.status() if group is not None else {})}

    app = create_app(models, auth, projectors=status, host=host,
                     local_tokens={local: Principal("agentlog sql", Role.ANALYST, "process")}, ingest=ingest)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    if supervisor is not None:
        supervisor.start()
    if group is not None:
        group.start()
    if owner is not None:
        advertise(settings, url, local)
    try:
        ready(url)
        server.run(sockets=[sock])
    finally:
        if owner is not None:
            withdraw(settings)
        if supervisor is not None:
            supervisor.terminate()
        if group is not None:
            group.stop.set()
            group.join(timeout=30)
        if ingest is not None:
            ingest.close()
        models.close()
        sock.close()


def serve_ingest(settings: Settings, *, host: str = "127.0.0.1", port: int = 4318,
                 ready: Callable[[str], None] = lambda url: None) -> None:
    """The OTLP/HTTP ingest alone (``POST /v1/traces``, ``/metrics``, ``/healthz``), until interrupted."""
    sock = listen(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    auth = AuthStore(settings)
    auth.setup()
    ingest = Ingest(settings).start()
    server = uvicorn.Server(uvicorn.Config(create_ingest_app(auth, ingest, host=host), log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=5))
    try:
        ready(url)
        server.run(sockets=[sock])
    finally:
        ingest.close()
        sock.close()
