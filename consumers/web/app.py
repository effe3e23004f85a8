"""The web application: the dashboard's pages, their JSON API and the projectors' Prometheus metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app

from agentlog.consumers.read_models import ReadModels
from agentlog.consumers.web import api, pages
from agentlog.consumers.web.security import secure
from agentlog.schemas.errors import AgentlogError


def create_app(models: ReadModels, *, projectors: Callable[[], dict[str, Any]] = dict, host: str = "127.0.0.1"):
    """``projectors`` says, when asked, how each projector of the serving process is doing; ``host``, the
    address served (a request must name it, or localhost, in its Host header)."""
    app = FastAPI(title="agentlog", summary="What AI agents did, why, and how it went.", docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)
    app.state.models = models
    app.state.projectors = projectors
    app.add_exception_handler(AgentlogError, api.agentlog_error)
    app.add_exception_handler(RequestValidationError, api.invalid_request)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.mount("/metrics", make_asgi_app())
    return secure(app, host=host)
