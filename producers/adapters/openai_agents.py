"""The OpenAI Agents SDK's own tracing, recorded as agentlog events (``pip install agentlog[openai-agents]``).

    from agents import add_trace_processor
    from agentlog.producers.adapters.openai_agents import AgentlogProcessor
    add_trace_processor(AgentlogProcessor())

Each trace is a conversation (its ``group_id`` when the run sets one, else the trace id), whose subject is
the trace metadata's ``user_id`` (``RunConfig(trace_metadata={"user_id": ...})``; ``subject_id`` too). Agent spans,
generations, function calls, handoffs and guardrails become points of the same mapping the OTLP ingest
uses (``producers.otel.genai``), so a run reads the same whichever way it arrives. Events are handed to the
log without blocking the run; ``force_flush`` (and ``shutdown``) waits until every one is durable.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from agents.tracing import (
    AgentSpanData,
    FunctionSpanData,
    GenerationSpanData,
    GuardrailSpanData,
    HandoffSpanData,
    Span,
    Trace,
    TracingProcessor,
)

from agentlog.producers.adapters.handed import Handed
from agentlog.producers.otel.genai import (
    Kind,
    Point,
    Timeline,
    as_json,
    conversation_of_trace,
    name_of,
    subject_of_run,
)
from agentlog.producers.otel.prices import Prices, default_prices
from agentlog.producers.sync import SyncEventLog

log = logging.getLogger(__name__)


def _ns(moment: str | None) -> int:
    if not moment:
        return time.time_ns()
    return int(datetime.fromisoformat(moment).timestamp() * 1e9)


def _content(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class AgentlogProcessor(TracingProcessor):
    """Records every trace of the SDK into agentlog; ``log``: a SyncEventLog of one's own (default: one made
    from the settings, closed on ``shutdown``)."""

    def __init__(self, log: SyncEventLog | None = None, *, tenant_id: str = "default",
                 prices: Prices | None = None) -> None:
        self.log = log or SyncEventLog()
        self._owns = log is None
        self.tenant_id = tenant_id
        self.prices = prices or default_prices()
        self._timelines: dict[str, Timeline] = {}
        self._handed = Handed()
        self._lock = threading.Lock()

    # -- the SDK's callbacks (never raise into the run) -------------------------------------------------------

    def on_trace_start(self, trace: Trace) -> None:
        group = name_of(getattr(trace, "group_id", None))
        conversation = group or conversation_of_trace(trace.trace_id.removeprefix("trace_"))
        subject = subject_of_run(getattr(trace, "metadata", None))
        with self._lock:
            self._timelines[trace.trace_id] = Timeline(conversation, tenant_id=self.tenant_id, subject_id=subject)

    def on_trace_end(self, trace: Trace) -> None:
        with self._lock:
            timeline = self._timelines.pop(trace.trace_id, None)
            if timeline is not None:
                self._send(timeline.finish(trace.trace_id, trace.trace_id, time.time_ns()))

    def on_span_start(self, span: Span[Any]) -> None:
        if isinstance(span.span_data, AgentSpanData):
            self._feed(span, [Point(Kind.AGENT_START, _ns(span.started_at), span.trace_id, span.span_id,
                                    name_of(span.span_data.name), {"user_message": None})])

    def on_span_end(self, span: Span[Any]) -> None:
        try:
            found = self._points(span)
        except Exception:  # a span this adapter cannot read must not break the agent's run
            log.exception("agentlog: could not read the SDK's %s span", type(span.span_data).__name__)
            return
        if found:
            self._feed(span, found)

    def force_flush(self) -> None:
        """Wait until every event handed over is durable."""
        self._handed.wait()

    def shutdown(self) -> None:
        self.force_flush()
        if self._owns:
            self.log.close()

    # -- reading the SDK's spans -------------------------------------------------------------------------

    def _points(self, span: Span[Any]) -> list[Point]:
        data = span.span_data
        start, end = _ns(span.started_at), _ns(span.ended_at)
        point = _PointMaker(span.trace_id, span.span_id)
        found: list[Point] = []
        error = span.error
        if isinstance(data, GenerationSpanData):
            usage = data.usage or {}
            model = name_of(data.model) or "unknown"
            tokens_in, tokens_out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
            users = [_content(m) for m in data.input or () if isinstance(m, dict) and m.get("role") == "user"]
            texts = [_content(m) for m in data.output or () if isinstance(m, dict) and m.get("role") == "assistant"]
            found.append(point(Kind.LLM, start, None, model=model, input_tokens=tokens_in, output_tokens=tokens_out,
                               latency_ms=(end - start) / 1e6, cost_usd=self.prices.cost(model, tokens_in, tokens_out),
                               end_ns=end, user_message=next((u for u in reversed(users) if u), None),
                               text=next((t for t in reversed(texts) if t), None)))
        elif isinstance(data, FunctionSpanData):
            call_id = span.span_id
            found.append(point(Kind.TOOL, start, None, tool=name_of(data.name) or "tool", call_id=call_id,
                               arguments=as_json(data.input), result=as_json(data.output),
                               status="error" if error else "ok", duration_ms=(end - start) / 1e6, end_ns=end))
            if error:
                found.append(point(Kind.ERROR, end, None, **_error(error), tool_call_id=call_id))
            return found
        elif isinstance(data, HandoffSpanData):
            found.append(point(Kind.HANDOFF, start, None, from_agent=name_of(data.from_agent),
                               to_agent=name_of(data.to_agent)))
        elif isinstance(data, GuardrailSpanData) and data.triggered:
            found.append(point(Kind.GUARDRAIL, end, None, guardrail=name_of(data.name) or "guardrail", detail=""))
        if error:
            found.append(point(Kind.ERROR, end, None, **_error(error), tool_call_id=None))
        return found

    def _feed(self, span: Span[Any], found: list[Point]) -> None:
        with self._lock:
            timeline = self._timelines.get(span.trace_id)
            if timeline is not None:
                self._send(timeline.feed(found))

    def _send(self, made: list[Any]) -> None:
        """Under the lock: hand the events over in order."""
        for item in made:
            self._handed.add(self.log.submit(item.event))


class _PointMaker:
    def __init__(self, trace_id: str, span_id: str) -> None:
        self.trace_id = trace_id
        self.span_id = span_id

    def __call__(self, kind: Kind, at: int, agent: str | None, **data: Any) -> Point:
        return Point(kind, at, self.trace_id, self.span_id, agent, data)


def _error(error: Any) -> dict[str, str]:
    message = str(error.get("message") or "error") if isinstance(error, dict) else str(error)
    detail = error.get("data") if isinstance(error, dict) else None
    text = str(detail.get("error")) if isinstance(detail, dict) and detail.get("error") else message
    return {"error_type": name_of(message) or "error", "message": text}
