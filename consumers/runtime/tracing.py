"""A projector's batch continues the traces of its events: one span per batch, linked to the span each event
was recorded in (its message's ``traceparent``), when an OpenTelemetry SDK is configured.

Without one, ``batch_span`` is a null context: no header is read, no span is made.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from agentlog.producers.tracing import from_headers
from agentlog.projections.base import Batch

MAX_LINKS = 128
"""Links kept on one batch's span (the SDK's own default limit); the count of all is an attribute."""


def configured() -> bool:
    """Whether spans made now go anywhere: an SDK's tracer provider is set (not the API's default)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def links(batch: Batch) -> tuple[list[Link], int]:
    """Links to the distinct spans the batch's events came from (at most MAX_LINKS), and how many there were."""
    seen: set[tuple[str, str]] = set()
    kept: list[Link] = []
    for record in batch.records:
        message = record.message
        context = from_headers(message.headers() if message is not None else None)
        if context is None or (context.trace_id, context.span_id) in seen:
            continue
        seen.add((context.trace_id, context.span_id))
        if len(kept) < MAX_LINKS:
            kept.append(Link(SpanContext(int(context.trace_id, 16), int(context.span_id, 16), is_remote=True,
                                         trace_flags=TraceFlags(TraceFlags.SAMPLED if context.sampled else 0))))
    return kept, len(seen)


@contextlib.contextmanager
def batch_span(projection: str, group: str, batch: Batch) -> Iterator[None]:
    if not configured():
        yield
        return
    kept, count = links(batch)
    tracer = trace.get_tracer("agentlog.projector")
    with tracer.start_as_current_span(f"{projection} apply", kind=SpanKind.CONSUMER, links=kept, attributes={
            "messaging.system": "kafka", "messaging.operation.type": "process",
            "messaging.destination.name": batch.topic, "messaging.consumer.group.name": group,
            "messaging.batch.message_count": len(batch.records), "agentlog.linked_spans": count,
            "agentlog.projection": projection}):
        yield
