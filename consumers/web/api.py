"""The JSON API the dashboard page uses: the same ``ReadModels`` calls as the command line.

A user's mistake is a 4xx with ``{"detail": "one line"}``; a store that does not answer is a 503 naming
it and the command that brings it up.
"""

from __future__ import annotations

import functools
import time
from typing import Annotated, Any, AsyncIterator

import anyio
from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from agentlog.consumers.operations import live
from agentlog.consumers.operations.answers import dumps
from agentlog.consumers.operations.read_models import ReadModels, plain
from agentlog.consumers.operations.replay import UnknownConversation
from agentlog.consumers.web.security import Forbidden
from agentlog.deploy.errors import StackError
from agentlog.projections.base import StoreUnavailable
from agentlog.projections.reads import sql as analytics_queries
from agentlog.schemas.errors import AgentlogError


class JSON(JSONResponse):
    """An answer written as the CLI's ``--json`` writes it, so the two compare equal."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


router = APIRouter(prefix="/api", default_response_class=JSON)


def status_of(exc: AgentlogError) -> int:
    """404 for an unknown conversation, 503 for a store that does not answer, 400 for the rest."""
    if isinstance(exc, UnknownConversation):
        return 404
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, (StoreUnavailable, StackError)):  # TooManyStreams too: an outage of capacity
        return 503
    return 400


async def agentlog_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentlogError)
    return JSON({"detail": str(exc)}, status_code=status_of(exc))


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """A parameter that does not fit (``limit=0``, no ``q``): one line naming it, not a list of objects."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"][1:]) or "the request"
    return JSON({"detail": f"{where}: {first['msg']}"}, status_code=400)


def models(request: Request) -> ReadModels:
    found: ReadModels = request.app.state.models
    return found


@router.get("/metrics")
def agent_metrics(request: Request, since: str = "24h") -> JSON:
    """The agents' figures: ``agentlog metrics --since S --json``."""
    return JSON(models(request).metrics(since))


@router.get("/counters")
def counters(request: Request) -> JSON:
    """Totals over every conversation, for the live counters."""
    return JSON(models(request).counters())


@router.get("/conversations")
def conversations(request: Request, status: str | None = None, agent: str | None = None,
                  limit: int = Query(50, ge=1, le=1000), before: str | None = None) -> JSON:
    """The newest conversations, filtered by status and by an agent that took part; ``before``, the
    ``started_at|id`` of the last one on a page, gives the next page."""
    return JSON(models(request).conversations(status=status, agent=agent, limit=limit, before=before))


@router.get("/conversations/{conversation_id}")
def conversation(request: Request, conversation_id: str, at: int | None = Query(None, ge=1, le=2**53),
                 as_of: str | None = None) -> JSON:
    """The replayed state and the timeline: ``agentlog replay ID --json``; ``at``: as it was after that step,
    ``as_of``: after the last step by that time (ISO 8601)."""
    return JSON(models(request).conversation(conversation_id, at=at, as_of=as_of))


@router.get("/conversations/{conversation_id}/events", response_model=None)
async def conversation_events(request: Request, conversation_id: str,
                              last_event_id: str | None = Header(None)) -> StreamingResponse:
    """The conversation's events as server-sent events: those so far, then each as it reaches the log;
    reconnecting with ``Last-Event-ID`` goes on after that event (none lost, none twice)."""
    plain("conversation id", conversation_id, most=256)
    stream = await run_in_threadpool(live.open_stream, models(request).settings, conversation=conversation_id,
                                     last_event_id=last_event_id)
    return _streamed(request, stream)


@router.get("/events", response_model=None)
async def every_event(request: Request, last_event_id: str | None = Header(None)) -> StreamingResponse:
    """Every new event of every conversation as server-sent events (operators); resumable as above."""
    stream = await run_in_threadpool(live.open_stream, models(request).settings, conversation=None,
                                     last_event_id=last_event_id)
    return _streamed(request, stream)


KEEP_ALIVE = 15.0
"""Seconds of quiet after which a stream sends a comment, so that proxies and browsers keep it open."""


@functools.cache
def _limiter() -> anyio.CapacityLimiter:
    """Threads for the streams' blocking reads, one a stream (the event loop's default pool has a handful)."""
    return anyio.CapacityLimiter(live.MAX_STREAMS + 2)


def _streamed(request: Request, stream: live.Stream) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            quiet = time.monotonic()
            while not await request.is_disconnected():
                batch = await anyio.to_thread.run_sync(stream.read, 0.5, limiter=_limiter())
                for ident, event in batch:
                    yield (f"id: {ident}\nevent: {event.event_type.value}\n"
                           f"data: {dumps(live.event_json(event))}\n\n").encode()
                if batch:
                    quiet = time.monotonic()
                elif time.monotonic() - quiet > KEEP_ALIVE:
                    yield b": keep-alive\n\n"
                    quiet = time.monotonic()
        finally:  # also when the client went away and the response was cancelled: the consumer is let go
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(stream.close, limiter=_limiter())
    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/compare")
def compare(request: Request, a: str, b: str) -> JSON:
    """Two runs side by side, the first step where they part, their totals: ``agentlog diff A B --json``."""
    return JSON(models(request).compare(a, b))


@router.get("/search")
def search(request: Request, q: str = "*", agent: str | None = None, status: str | None = None,
           since: str | None = None, limit: int = Query(20, ge=1, le=1000), forked_from: str | None = None) -> JSON:
    """Full text over messages and tool I/O, newest first: ``agentlog search Q --json``; ``forked_from``: only
    that conversation's forks."""
    return JSON(models(request).search(q, agent=agent, status=status, since=since, limit=limit,
                                       forked_from=forked_from))


@router.get("/sql", include_in_schema=False)
def sql_get(request: Request) -> JSON:
    """A statement runs only by POST: a link or an image on another site must not run one."""
    return JSON({"detail": 'POST /api/sql with {"sql": "SELECT ..."} (Content-Type: application/json)'},
                status_code=405, headers={"Allow": "POST"})


@router.post("/sql", response_model=None)
def sql_post(request: Request, body: Annotated[Any, Body()]) -> JSON | Response:
    """A statement in the SQL box (one SELECT over the analytics tables, within the limits), with
    ``{"sql": "SELECT ..."}`` in the body: ``agentlog sql Q --json`` gives the same rows. With ``"format"``
    (csv, parquet or jsonl) the result comes as that file; one past the row or byte limit is refused whole."""
    statement = body.get("sql") if isinstance(body, dict) else None
    if not isinstance(statement, str):
        raise AgentlogError('the body must be JSON: {"sql": "SELECT ..."}')
    kind = body.get("format", "json")
    if kind == "json":
        return JSON({"rows": models(request).sql(statement)})
    if not isinstance(kind, str) or kind not in analytics_queries.FILE_FORMATS:
        raise AgentlogError(f"format: choose json or one of {', '.join(analytics_queries.FILE_FORMATS)}")
    return file_response(models(request).sql_file(statement, kind), kind)


def file_response(data: bytes, kind: str) -> Response:
    """A result file, downloaded as ``result.<kind>``."""
    return Response(data, media_type=analytics_queries.MEDIA_TYPES[kind],
                    headers={"Content-Disposition": f'attachment; filename="result.{kind}"'})


@router.get("/charts")
def charts(request: Request) -> JSON:
    """The analytics page's series: tool calls over time, failures by type, tokens and cost by model."""
    return JSON(models(request).charts())


@router.get("/lag")
def lag(request: Request) -> JSON:
    """Per projection, per partition, what is left to apply: ``agentlog lag --json``."""
    return JSON(models(request).lag())


@router.get("/spool")
def spool(request: Request) -> JSON:
    """What agents on this machine keep in their spool while the broker is away: ``agentlog spool status --json``."""
    return JSON(models(request).spool())


@router.get("/health")
def health(request: Request) -> JSON:
    """Whether each projector of this process runs, what it applied, and why it stopped if it did."""
    return JSON({"projectors": request.app.state.projectors(),
                 "live_streams": {"open": live.open_streams(), "most": live.MAX_STREAMS}})
