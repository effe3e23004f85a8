"""Trace context on every message: the W3C ``traceparent`` (and ``tracestate``) of the span an event was
recorded in, and the event's type, as Kafka headers.

The span is OpenTelemetry's current one (``opentelemetry-api``: without an SDK configured there is none,
and the headers say only the type), or a context given explicitly, as the OTLP ingest gives each event
the span it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opentelemetry import trace

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
EVENT_TYPE = "agentlog.event_type"
Headers = list[tuple[str, str | bytes | None]]

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_MAX_TRACESTATE = 512
"""The W3C limit: 32 entries of at most 256 characters in all is the usual bound; longer is cut."""


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span's identity as W3C Trace Context says it."""

    trace_id: str
    """32 lower-case hex digits, not all zero."""
    span_id: str
    """16 lower-case hex digits, not all zero."""
    sampled: bool = True
    tracestate: str = ""

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    @classmethod
    def parse(cls, traceparent: str, tracestate: str = "") -> "TraceContext | None":
        """The context a ``traceparent`` header says, or None when it is not a valid version-00 one."""
        match = _TRACEPARENT.fullmatch(traceparent.strip())
        if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
            return None
        return cls(match.group(1), match.group(2), bool(int(match.group(3), 16) & 1), tracestate[:_MAX_TRACESTATE])


def current() -> TraceContext | None:
    """The current OpenTelemetry span's context, when there is a valid one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    state = context.trace_state.to_header() if context.trace_state else ""
    return TraceContext(f"{context.trace_id:032x}", f"{context.span_id:016x}", context.trace_flags.sampled,
                        state[:_MAX_TRACESTATE])


_TYPE_HEADERS: dict[str, tuple[str, bytes]] = {}


def headers(event_type: str, context: TraceContext | None) -> Headers:
    """The headers of one event's message."""
    kind: tuple[str, str | bytes | None] | None = _TYPE_HEADERS.get(event_type)
    if kind is None:
        kind = _TYPE_HEADERS.setdefault(event_type, (EVENT_TYPE, event_type.encode()))
    if context is None:
        return [kind]
    found = [kind, (TRACEPARENT, context.traceparent.encode())]
    if context.tracestate:
        found.append((TRACESTATE, context.tracestate.encode()))
    return found


def from_headers(found: list[tuple[str, bytes | None]] | None) -> TraceContext | None:
    """The trace context a message's headers carry, if any (hostile bytes give None, never an error)."""
    if not found:
        return None
    parent = state = ""
    for name, value in found:
        if value is None or len(value) > 1024:
            continue
        if name == TRACEPARENT:
            parent = value.decode("ascii", "replace")
        elif name == TRACESTATE:
            state = value.decode("ascii", "replace")
    return TraceContext.parse(parent, state) if parent else None
