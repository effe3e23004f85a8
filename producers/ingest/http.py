"""``POST /v1/traces``: OTLP/HTTP trace export, on ``agentlog serve`` and on ``agentlog ingest`` alone.

Answers as the OTLP specification says: 200 with an ExportTraceServiceResponse (its partial success
counts the spans rejected and says why), 400 for a body that is not OTLP, 413 for one too large, 415 for
another content type, 503 with ``Retry-After`` while Postgres is away or the ingest holds too much (an
exporter sends the batch again). The error bodies are a ``google.rpc.Status`` in the request's encoding.
"""

from __future__ import annotations

import json
import logging
import threading

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import Counter, Gauge
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from agentlog.deploy.clients import PostgresRefused
from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.producers.ingest import otlp
from agentlog.producers.ingest.staging import Behind, Flusher, Staging

log = logging.getLogger(__name__)

SPANS = Counter("agentlog_ingest_spans_total", "OTLP spans received, by outcome", ["outcome"])
BACKLOG = Gauge("agentlog_ingest_backlog", "Spans waiting and events in the outbox, not yet in the log")
RETRY_AFTER = "5"
_DECODING = threading.BoundedSemaphore(2)
"""Bodies inflated and parsed at once (each may take 32 MiB and a core)."""

router = APIRouter(include_in_schema=False)


class Ingest:
    """The staging and its flusher, for one process."""

    def __init__(self, settings: Settings, *, settle: float = 0.5, deadline: float = 10.0) -> None:
        self.subjects = settings.subject_attributes
        self.staging = Staging(settings, settle=settle, deadline=deadline)
        self.flusher = Flusher(self.staging)

    def start(self) -> "Ingest":
        try:
            self.staging.setup()
        except StackError as exc:  # Postgres is away: requests answer 503 until it is back
            log.warning("ingest: %s", exc)
        self.flusher.start()
        return self

    def close(self) -> None:
        self.flusher.close()
        self.staging.close()


def _status(kind: str, code: int, message: str) -> bytes:
    """A google.rpc.Status (code, message) in the request's encoding."""
    if kind == otlp.JSON:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    return b"\x08" + bytes((code,)) + b"\x12" + _varint(len(text)) + text


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _refuse(kind: str, status: int, code: int, message: str, **headers: str) -> Response:
    return Response(_status(kind, code, message), status_code=status, media_type=kind, headers=headers)


@router.post("/v1/traces")
async def export_traces(request: Request) -> Response:
    try:
        kind = otlp.media_type(request.headers.get("content-type"))
    except otlp.BadRequest as exc:
        return _refuse(otlp.JSON, 415, 3, str(exc))
    body = await request.body()  # bounded by the web layer: a larger body was refused with 413 already
    ingest: Ingest = request.app.state.ingest
    try:  # inflating and parsing take a while for a large body: off the event loop, two at a time
        decoded = await run_in_threadpool(_decode, body, request.headers.get("content-encoding"), kind,
                                          ingest.subjects)
    except otlp.TooLarge as exc:
        return _refuse(kind, 413, 8, str(exc))
    except otlp.BadRequest as exc:
        return _refuse(kind, 400, 3, str(exc))
    try:
        new = await run_in_threadpool(ingest.staging.stage, decoded.spans)
    except Behind as exc:
        return _refuse(kind, 503, 14, f"{exc}; try again later", **{"Retry-After": RETRY_AFTER})
    except PostgresRefused as exc:  # a mistake in configuration, not an outage: sending again will not help
        log.error("ingest: %s", exc)
        return _refuse(kind, 500, 13, f"the ingest cannot keep spans: {exc}")
    except StackError as exc:
        return _refuse(kind, 503, 14, f"{exc}; the spans were not kept, send them again",
                       **{"Retry-After": RETRY_AFTER})
    SPANS.labels("accepted").inc(new)
    SPANS.labels("duplicate").inc(len(decoded.spans) - new)
    SPANS.labels("rejected").inc(decoded.rejected)
    BACKLOG.set(ingest.staging.backlog)
    message = "; ".join(decoded.problems or [])
    return Response(otlp.response(kind, decoded.rejected, message), media_type=kind)


def _decode(body: bytes, encoding: str | None, kind: str, subjects: tuple[str, ...]) -> otlp.Decoded:
    with _DECODING:
        return otlp.spans_of(otlp.parse(otlp.inflate(body, encoding), kind), subjects=subjects)


def attach(app: FastAPI, ingest: Ingest) -> None:
    app.state.ingest = ingest
    app.include_router(router)
