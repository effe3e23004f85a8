"""``agentlog serve``: the web application, and the projectors, each in a process of its own.

With embedded ClickHouse this process holds the store (one process may open it), so its analytics
queries go through the projection's client, and ``agentlog sql`` in another process is sent here.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Callable

import uvicorn

from agentlog.consumers.operations.read_models import ReadModels
from agentlog.consumers.runtime.supervisor import Supervisor
from agentlog.consumers.web.app import create_app, create_ingest_app
from agentlog.consumers.web.auth import AuthStore
from agentlog.consumers.web.clickhouse import PORT, Front
from agentlog.deploy.credentials import redact
from agentlog.deploy.errors import ServiceUnreachable
from agentlog.deploy.local.stack import Stack
from agentlog.deploy.settings import Settings
from agentlog.producers.ingest import Ingest
from agentlog.projections.registry import NAMES
from agentlog.schemas.errors import AgentlogError

log = logging.getLogger(__name__)


def check_stack(settings: Settings) -> None:
    """One line naming the first service that does not answer, and what to do about it."""
    for service in Stack(settings).status():
        if not service.healthy:
            raise ServiceUnreachable(service.name, service.address,
                                     "run `agentlog stack up` (or point AGENTLOG_* at a running one)")


def listen(host: str, port: int, *, what: str = "--port") -> socket.socket:
    """The server's socket, bound before anything starts, so a taken port is one clear line."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AgentlogError(f"{host}:{port} is already in use; stop what listens there or pick another "
                                f"port with {what}") from None
        raise AgentlogError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, projectors: bool = True,
          ingesting: bool = True, clickhouse_port: int | None = None,
          ready: Callable[[str], None] = lambda url: None) -> None:
    """Run until interrupted (SIGINT or SIGTERM); ``ready`` gets the URL once the socket listens.

    ``clickhouse_port``: where ClickHouse's HTTP protocol answers analysts' tools on the embedded store (0: not
    at all; None: 8123 when it is free, said in one line when it is not)."""
    check_stack(settings)
    sock = listen(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    front_socket = _clickhouse_socket(settings, host, clickhouse_port)
    supervisor = Supervisor(list(NAMES)) if projectors else None
    models = ReadModels(settings)
    auth = AuthStore(settings)
    auth.setup()
    ingest = Ingest(settings).start() if ingesting else None
    app = create_app(models, auth, projectors=supervisor.status if supervisor is not None else dict, host=host,
                     ingest=ingest)
    front = Front(settings, auth, front_socket).start() if front_socket is not None else None
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    if supervisor is not None:
        supervisor.start()
    try:
        ready(url)
        if front is not None:
            log.info("ClickHouse's HTTP protocol at http://%s:%d (analysts' and admins' users and tokens)",
                        host, front.socket.getsockname()[1])
        server.run(sockets=[sock])
    finally:
        if front is not None:
            front.close()
        if supervisor is not None:
            supervisor.terminate()
        if ingest is not None:
            ingest.close()
        models.close()
        sock.close()


def _clickhouse_socket(settings: Settings, host: str, port: int | None) -> socket.socket | None:
    if port == 0:
        return None
    if not settings.embedded_clickhouse:
        log.warning("not serving ClickHouse's HTTP protocol: analytics is a ClickHouse server (%s), which "
                    "analysts' tools reach directly", redact(settings.clickhouse_url))
        return None
    try:
        return listen(host, PORT if port is None else port, what="--clickhouse-port")
    except AgentlogError as exc:
        if port is not None:
            raise
        log.warning("not serving ClickHouse's HTTP protocol: %s", exc)
        return None


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
