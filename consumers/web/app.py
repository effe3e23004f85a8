"""The web application: the dashboard's pages, their JSON API and the projectors' Prometheus metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp

from agentlog.consumers.operations.read_models import ReadModels
from agentlog.consumers.web import access, api, pages, users
from agentlog.consumers.web.access import Access
from agentlog.consumers.web.auth import AuthStore
from agentlog.consumers.web.security import secure
from agentlog.producers.ingest import Ingest, attach
from agentlog.schemas.errors import AgentlogError


def create_app(models: ReadModels, auth: AuthStore, *, projectors: Callable[[], dict[str, Any]] = dict,
               host: str = "127.0.0.1", ingest: Ingest | None = None) -> ASGIApp:
    """``auth`` knows the users and tokens every request is checked against; ``projectors`` says, when asked,
    how each projector of the serving process is doing; ``host``, the address served (a request must name
    it, or localhost, in its Host header)."""
    app = FastAPI(title="agentlog", summary="What AI agents did, why, and how it went.", docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)
    app.state.models = models
    app.state.auth = auth
    app.state.projectors = projectors
    app.add_exception_handler(AgentlogError, api.agentlog_error)
    app.add_exception_handler(RequestValidationError, api.invalid_request)
    app.include_router(access.router)
    app.include_router(users.router)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.add_api_route("/metrics", prometheus_metrics, include_in_schema=False)
    app.add_api_route("/healthz", alive, include_in_schema=False)
    if ingest is not None:
        attach(app, ingest)
    return secure(Access(app, auth), host=host)


def create_ingest_app(auth: AuthStore, ingest: Ingest, *, host: str = "127.0.0.1") -> ASGIApp:
    """``agentlog ingest``: the OTLP endpoint, its metrics and a probe; every request authenticated."""
    app = FastAPI(title="agentlog ingest", docs_url=None, openapi_url=None, redoc_url=None)
    app.add_exception_handler(AgentlogError, api.agentlog_error)
    attach(app, ingest)
    app.add_api_route("/metrics", prometheus_metrics, include_in_schema=False)
    app.add_api_route("/healthz", alive, include_in_schema=False)
    return secure(Access(app, auth), host=host)


def prometheus_metrics() -> Response:
    """This process's Prometheus metrics, at /metrics itself (a scraper needs no redirect to follow)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def alive() -> dict[str, bool]:
    """Whether the process answers (for a load balancer's probe, which has no login): nothing more."""
    return {"ok": True}
