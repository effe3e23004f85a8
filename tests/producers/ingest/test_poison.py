"""One hostile span never makes the ingest resend the others, and nothing waits in its outbox forever: a 10 MB
attribute is cut when its event is made, and an event the broker refuses that is already in the outbox (as
the ingest made them before) gives way to one that says so, while every other event reaches the log once."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from agentlog.deploy.settings import Settings
from agentlog.producers.ingest.staging import Flusher, Staging
from agentlog.producers.tracing import TraceContext
from agentlog.schemas import Codec
from agentlog.schemas.events import EventType
from tests.factories import make_conversation
from tests.producers.ingest.test_otlp import EXPECTED, Served, _events_of, _provider, _run, ingest  # noqa: F401

TEN_MB = 10 << 20


def _outbox(staging: Staging) -> int:
    with staging.connect() as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def test_a_span_with_a_10_mb_attribute_is_cut_and_sends_nothing_twice(ingest: Served) -> None:  # noqa: F811
    exporter = OTLPSpanExporter(endpoint=f"{ingest.url}/v1/traces", headers={"Authorization": f"Bearer {ingest.token}"},
                                compression=Compression.Gzip, timeout=60)
    provider = _provider(exporter)
    tracer = provider.get_tracer("tests.poison")
    with tracer.start_as_current_span("invoke_agent triage", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage",
            "gen_ai.conversation.id": "conv-huge", "gen_ai.input.messages": "hello"}):
        with tracer.start_as_current_span("execute_tool lookup", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup", "gen_ai.tool.call.id": "c1",
                "gen_ai.tool.call.arguments": "{}", "gen_ai.tool.call.result": "x" * TEN_MB}):
            pass
    _run(provider, "conv-normal")  # sent after the huge one: it must land once
    provider.shutdown()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        events = _events_of(ingest.settings)
        normal = [e for e in events if e.conversation_id == "conv-normal"]
        if len(normal) >= len(EXPECTED) and any(e.conversation_id == "conv-huge" for e in events):
            break
        time.sleep(1)
    time.sleep(20)  # the old flusher sent everything again every 15 s
    events = _events_of(ingest.settings)
    copies = Counter(e.event_id for e in events)
    assert max(copies.values()) == 1, "an event reached the log twice"
    assert [e.event_type for e in events if e.conversation_id == "conv-normal"] == EXPECTED
    huge = [e for e in events if e.conversation_id == "conv-huge"]
    result = next(e for e in huge if e.event_type == EventType.TOOL_RESULT)
    assert "[cut by agentlog: " in result.payload["output_json"] and len(result.payload["output_json"]) < 300_000
    assert [e.sequence_number for e in huge] == list(range(1, len(huge) + 1))
    assert _outbox(Staging(ingest.settings)) == 0


def test_an_event_the_broker_refuses_gives_way_and_the_others_land_once(isolated: Settings, tmp_path: Path) -> None:
    staging = Staging(isolated)
    staging.setup()
    codec = Codec()
    poisoned = make_conversation(tools=1, conversation_id="conv-poisoned")
    poisoned[1] = dataclasses.replace(poisoned[1], payload={**poisoned[1].payload,
                                                            "input_json": json.dumps({"blob": "y" * (2 << 20)})})
    others = [e for i in range(3) for e in make_conversation(tools=2, conversation_id=f"conv-sound-{i}")]
    context = TraceContext("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    with staging.connect() as conn, conn.cursor() as cur:
        with cur.copy("COPY outbox (conversation_id, sequence_number, event, traceparent) FROM STDIN") as copy:
            for event in [*poisoned, *others]:
                copy.write_row((event.conversation_id, event.sequence_number, codec.encode(event),
                                context.traceparent))
    flusher = Flusher(staging).start()
    try:
        deadline = time.monotonic() + 60
        while _outbox(staging) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # a retry would send again here
    finally:
        flusher.close()
    assert _outbox(staging) == 0, "an event waits in the outbox"
    events = _events_of(isolated)
    assert Counter(e.event_id for e in events) == Counter(e.event_id for e in [*poisoned, *others])
    stood_in = next(e for e in events if e.event_id == poisoned[1].event_id)
    assert stood_in.event_type == EventType.ERROR_OCCURRED and stood_in.payload["error_type"] == "event_too_large"
    assert [e.sequence_number for e in events if e.conversation_id == "conv-poisoned"] == [1, 2, 3, 4]


def test_eight_large_bodies_at_once_leave_healthz_answering(ingest: Served) -> None:  # noqa: F811
    """Inflating and parsing run off the event loop: /healthz answers while eight 30 MB JSON bodies are read."""
    import gzip
    import threading
    import urllib.request

    now = time.time_ns()
    body = gzip.compress(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat",
        "startTimeUnixNano": str(now - 1000), "endTimeUnixNano": str(now),
        "attributes": [{"key": f"k{i}", "value": {"stringValue": "z" * 100_000}} for i in range(300)]}]}]}]})
        .encode())
    answers: list[int] = []
    posting = [threading.Thread(target=lambda: answers.append(ingest.post(body, kind="application/json",
                                                                         encoding="gzip")[0])) for _ in range(8)]
    for thread in posting:
        thread.start()
    slowest = 0.0
    while any(thread.is_alive() for thread in posting):
        started = time.monotonic()
        with urllib.request.urlopen(f"{ingest.url}/healthz", timeout=30) as response:
            assert response.status == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    for thread in posting:
        thread.join()
    assert answers == [200] * 8
    assert slowest < 2.0, f"/healthz took {slowest:.2f}s while the bodies were read"
