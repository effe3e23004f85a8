"""The JSON API the dashboard page uses: the same ``ReadModels`` calls as the command line.

A user's mistake is a 4xx with ``{"detail": "one line"}``; a store that does not answer is a 503 naming
it and the command that brings it up.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse

from agentlog.consumers.read_models import ReadModels
from agentlog.consumers.replay import UnknownConversation
from agentlog.consumers.runtime import StoreUnavailable
from agentlog.deploy.errors import StackError
from agentlog.schemas.errors import AgentlogError

router = APIRouter(prefix="/api")


def status_of(exc: AgentlogError) -> int:
    """404 for an unknown conversation, 503 for a store that does not answer, 400 for the rest."""
    if isinstance(exc, UnknownConversation):
        return 404
    if isinstance(exc, (StoreUnavailable, StackError)):
        return 503
    return 400


async def agentlog_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentlogError)
    return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))


def models(request: Request) -> ReadModels:
    return request.app.state.models


@router.get("/metrics")
def agent_metrics(request: Request, since: str = "24h") -> list[dict[str, Any]]:
    """The seed's agent metrics: ``agentlog metrics --since S --json``."""
    return models(request).metrics(since)


@router.get("/counters")
def counters(request: Request) -> dict[str, Any]:
    """Totals over every conversation, for the live counters."""
    return models(request).counters()


@router.get("/conversations")
def conversations(request: Request, status: str | None = None, agent: str | None = None,
                  limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    """The newest conversations, filtered by status and by an agent that took part."""
    return models(request).conversations(status=status, agent=agent, limit=limit)


@router.get("/conversations/{conversation_id}")
def conversation(request: Request, conversation_id: str) -> dict[str, Any]:
    """The replayed state and the timeline: ``agentlog replay ID --json``."""
    return models(request).conversation(conversation_id)


@router.get("/search")
def search(request: Request, q: str = "*", agent: str | None = None, status: str | None = None,
           since: str | None = None, limit: int = Query(20, ge=1, le=1000)) -> dict[str, Any]:
    """Full text over messages and tool I/O, newest first: ``agentlog search Q --json``."""
    return models(request).search(q, agent=agent, status=status, since=since, limit=limit)


@router.get("/sql")
def sql_get(request: Request, q: str) -> dict[str, Any]:
    """A read-only statement on ClickHouse: ``agentlog sql Q --json`` gives the same rows."""
    return {"rows": models(request).sql(q)}


@router.post("/sql")
def sql_post(request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """The same, with ``{"sql": "SELECT ..."}`` in the body (``agentlog sql`` in another process sends this)."""
    statement = body.get("sql")
    if not isinstance(statement, str):
        raise AgentlogError('the body must be JSON: {"sql": "SELECT ..."}')
    return {"rows": models(request).sql(statement)}


@router.get("/charts")
def charts(request: Request) -> dict[str, Any]:
    """The analytics page's series: tool calls over time, failures by type, tokens and cost by model."""
    return models(request).charts()


@router.get("/lag")
def lag(request: Request) -> dict[str, dict[str, int]]:
    """Per projection, per partition, what is left to apply: ``agentlog lag --json``."""
    return models(request).lag()


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    """Whether each projector of this process runs, what it applied, and why it stopped if it did."""
    return {"projectors": request.app.state.projectors()}
