"""Trace context on every message: an event appended inside a span carries its traceparent (through the spool
too), and a projector's batch span links to the spans its events came from."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentlog.consumers.runtime.loop import Projector
from agentlog.deploy.kafka import read_to_end
from agentlog.deploy.settings import Settings
from agentlog.producers import EventLog
from agentlog.producers.tracing import EVENT_TYPE, TRACEPARENT, TraceContext
from agentlog.projections.dashboard import DashboardProjection
from tests.factories import make_conversation
from tests.producers.test_spool import _down, _flush

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans():
    """The SDK set as the process's tracer provider, once (OpenTelemetry allows no second one); its spans are
    collected in memory for this test only."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _headers(settings: Settings, topic: str) -> list[dict[str, bytes]]:
    return [dict(m.headers() or []) for m in read_to_end(settings, topic)]


def test_every_message_carries_its_event_type_and_the_traceparent_of_the_span_it_was_recorded_in(
        stack: Settings, topic: str, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    events = make_conversation(tools=2)
    tracer = trace.get_tracer("test")

    async def run() -> list[str]:
        parents = []
        async with EventLog(stack, topic=topic, spool_dir=tmp_path) as log:
            for event in events[:-1]:
                with tracer.start_as_current_span(f"record {event.event_type}") as span:
                    context = span.get_span_context()
                    parents.append(f"00-{context.trace_id:032x}-{context.span_id:016x}-01")
                    await log.append(event)
            await log.append(events[-1])  # outside any span: the type alone
        return parents

    parents = asyncio.run(run())
    found = _headers(stack, topic)
    assert [h[EVENT_TYPE].decode() for h in found] == [e.event_type for e in events]
    assert [h[TRACEPARENT].decode() for h in found[:-1]] == parents
    assert TRACEPARENT not in found[-1]


def test_a_spooled_event_keeps_its_trace_context_when_the_spool_sends_it(stack: Settings, topic: str,
                                                                         tmp_path: Path) -> None:
    events = make_conversation(tools=1)
    given = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", tracestate="vendor=x")

    async def spool() -> None:
        async with EventLog(_down(stack), topic=topic, spool_dir=tmp_path, spool_after=0.3) as log:
            await asyncio.gather(*(log.append(e, trace=given) for e in events))

    asyncio.run(spool())
    _flush(stack, topic, tmp_path)
    found = _headers(stack, topic)
    assert len(found) == len(events)
    assert {h[TRACEPARENT] for h in found} == {b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    assert {h["tracestate"] for h in found} == {b"vendor=x"}


def test_a_projectors_batch_span_links_to_the_spans_its_events_came_from(
        isolated: Settings, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    events = make_conversation(tools=2)
    given = [TraceContext(f"{i + 1:032x}", f"{i + 1:016x}") for i in range(len(events))]

    async def run() -> None:
        async with EventLog(isolated, spool_dir=tmp_path) as log:
            for event, context in zip(events, given, strict=True):
                await log.append(event, trace=context)

    asyncio.run(run())
    projector = Projector(DashboardProjection(isolated), isolated, batch_wait=0.2)
    stopper = threading.Event()
    projector.run(stop=stopper, until_caught_up=True)
    batches = [s for s in spans.get_finished_spans() if s.name == "dashboard apply"]
    assert batches and sum(s.attributes["messaging.batch.message_count"] for s in batches) == len(events)
    linked = {(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for s in batches for link in s.links}
    assert linked == {(c.trace_id, c.span_id) for c in given}
    assert all(s.kind is trace.SpanKind.CONSUMER for s in batches)
