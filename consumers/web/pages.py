"""The dashboard's pages: server-side templates over the same ``ReadModels`` as the JSON API.

Each part of a page asks one store; a store that does not answer costs that part (shown as one line
saying what is wrong and what to do), not the page.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from agentlog.consumers.operations.read_models import ReadModels
from agentlog.consumers.web.api import file_response, status_of
from agentlog.consumers.web.security import Forbidden, csrf_token, form, set_csrf_cookie
from agentlog.projections.reads import marked, page_after
from agentlog.projections.reads import sql as analytics_queries
from agentlog.schemas.errors import AgentlogError
from agentlog.schemas.events import ConversationStatus

PAGE = 25
STATUSES = [status.value for status in ConversationStatus]
EXAMPLE_SQL = ("SELECT agent_name, tool_name, sum(calls) AS calls, sum(failures) AS failures\n"
               "FROM tool_usage_hourly GROUP BY agent_name, tool_name ORDER BY calls DESC LIMIT 10")

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def highlight(fragment: str) -> Markup:
    """A search highlight: its text escaped, its matches marked (a user's own markup stays text)."""
    return Markup("").join(Markup("<mark>{}</mark>").format(text) if matched else escape(text)
                           for text, matched in marked(fragment))


templates.env.filters["highlight"] = highlight
templates.env.filters["spooled_at"] = lambda at: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


class Part:
    """What one store answered for one part of a page, or the one line that says why it did not."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: str | None = None
        try:
            self.value = read()
        except AgentlogError as exc:
            self.error = str(exc)


def models(request: Request) -> ReadModels:
    found: ReadModels = request.app.state.models
    return found


def _overview(request: Request, status: str | None, agent: str | None, before: str | None) -> dict[str, Any]:
    m = models(request)
    rows = Part(lambda: m.conversations(status=status, agent=agent, limit=PAGE, before=before))
    older = page_after(rows.value[-1]) if rows.value and len(rows.value) == PAGE else None
    return {"counters": Part(m.counters), "metrics": Part(lambda: m.metrics("24h")), "conversations": rows,
            "older": older, "lag": Part(m.lag), "spool": Part(m.spool), "projectors": request.app.state.projectors(),
            "status": status or "", "agent": agent or "", "before": before or ""}


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, status: str | None = None, agent: str | None = None,
              before: str | None = None) -> HTMLResponse:
    agents = Part(models(request).agents)
    return templates.TemplateResponse(request, "dashboard.html", {
        **_overview(request, status, agent, before), "agents": agents.value or [], "statuses": STATUSES,
        "page": "dashboard"})


@router.get("/fragments/overview", response_class=HTMLResponse)
def overview(request: Request, status: str | None = None, agent: str | None = None,
             before: str | None = None) -> HTMLResponse:
    """The dashboard's live part, fetched again every few seconds by the page."""
    return templates.TemplateResponse(request, "overview.html", _overview(request, status, agent, before))


@router.get("/conversations/{conversation_id}", response_class=HTMLResponse)
def conversation(request: Request, conversation_id: str, at: int | None = Query(None, ge=1, le=2**53)) -> HTMLResponse:
    """The conversation replayed; ``at``: as it was after that step (the page steps through it)."""
    try:
        replayed = models(request).conversation(conversation_id, at=at)
    except AgentlogError as exc:
        return templates.TemplateResponse(request, "error.html", {"message": str(exc), "page": ""},
                                          status_code=status_of(exc))
    return templates.TemplateResponse(request, "conversation.html", {
        "id": conversation_id, "state": replayed["state"], "events": replayed["events"],
        "forks": replayed.get("forks", []), "at": at, "steps": replayed["steps"], "page": ""})


@router.get("/compare", response_class=HTMLResponse)
def compare(request: Request, a: str = "", b: str = "") -> HTMLResponse:
    """Two runs side by side, the first step where they part marked, their totals."""
    result = Part(lambda: models(request).compare(a, b)) if a and b else None
    return templates.TemplateResponse(request, "compare.html", {"a": a, "b": b, "result": result, "page": ""})


@router.get("/search", response_class=HTMLResponse)
def search(request: Request, q: str = "", agent: str | None = None, status: str | None = None,
           since: str | None = None) -> HTMLResponse:
    result = Part(lambda: models(request).search(q, agent=agent, status=status, since=since, limit=50)) if q else None
    return templates.TemplateResponse(request, "search.html", {
        "q": q, "agent": agent or "", "status": status or "", "since": since or "", "result": result,
        "statuses": STATUSES, "page": "search"})


@router.get("/analytics", response_class=HTMLResponse)
def analytics(request: Request, sql: str | None = None) -> HTMLResponse:
    """The charts and the SQL box, with ``sql`` written in it (a link may fill the box; only a POST runs it)."""
    return _analytics(request, sql or EXAMPLE_SQL, None)


@router.post("/analytics", response_class=HTMLResponse)
async def analytics_run(request: Request) -> HTMLResponse:
    """Run the box's statement: a POST of the page's own form (its token matches this browser's cookie)."""
    try:
        fields = await form(request)
    except Forbidden as exc:
        return templates.TemplateResponse(request, "error.html", {"message": str(exc), "page": ""}, status_code=403)
    statement = fields.get("sql", "")
    rows = await run_in_threadpool(Part, lambda: models(request).sql(statement))
    return _analytics(request, statement, rows)


@router.post("/analytics/download", response_model=None)
async def analytics_download(request: Request) -> HTMLResponse | Response:
    """The box's statement's result as a file (``kind``: csv or parquet), from the page's own form."""
    try:
        fields = await form(request)
    except Forbidden as exc:
        return templates.TemplateResponse(request, "error.html", {"message": str(exc), "page": ""}, status_code=403)
    statement, kind = fields.get("sql", ""), fields.get("kind", "csv")
    if kind not in analytics_queries.FILE_FORMATS:
        kind = "csv"
    made = await run_in_threadpool(Part, lambda: models(request).sql_file(statement, kind))
    if made.error is not None:  # past a limit, or refused: said on the page, in the file's place
        return _analytics(request, statement, made)
    return file_response(made.value, kind)


def _analytics(request: Request, statement: str, rows: Part | None) -> HTMLResponse:
    token = csrf_token(request)
    limits = models(request).settings
    response = templates.TemplateResponse(request, "analytics.html", {
        "sql": statement, "rows": rows, "page": "analytics", "csrf": token,
        "limits": f"{limits.sql_timeout:g} s and {limits.sql_rows:,} rows"})
    set_csrf_cookie(response, token)
    return response
