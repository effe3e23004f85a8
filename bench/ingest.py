"""The OTLP ingest's throughput: GenAI spans POSTed to ``agentlog ingest`` (protobuf, batches of 512 spans, the
SDK exporters' default), until their events are acknowledged by Kafka; beside it, in the same run, the two
ceilings of that path measured alone: decoding the same bodies, and the producer appending the same events.

    .venv/bin/python bench/ingest.py [--traces 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy.kafka import watermarks
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import settings as current_settings
from agentlog.producers import EventLog
from agentlog.producers.ingest import otlp
from agentlog.producers.otel import Span, Timeline, points

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "ingest.json"
SPANS_PER_TRACE = 6
EVENTS_PER_TRACE = 8
BATCH = 512


def _attr(span, key: str, value) -> None:
    kv = span.attributes.add()
    kv.key = key
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value


def bodies(traces: int) -> list[bytes]:
    """Protobuf export requests of ``traces`` conversations, each an agent, two model calls and two tools."""
    now = time.time_ns() - 10**9
    spans = []
    for t in range(traces):
        trace_id = uuid.uuid4().bytes
        root = uuid.uuid4().bytes[:8]
        shape = [("invoke_agent triage", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage",
                                          "gen_ai.conversation.id": f"bench-{trace_id.hex()}",
                                          "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", '
                                                                   '"content": "where is my order"}]}]'}),
                 ("chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                           "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30}),
                 ("execute_tool lookup_order", {"gen_ai.operation.name": "execute_tool",
                                                "gen_ai.tool.name": "lookup_order",
                                                "gen_ai.tool.call.arguments": '{"order_id": "ORD-1"}',
                                                "gen_ai.tool.call.result": '{"status": "delivered"}'}),
                 ("execute_tool track", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "track",
                                         "gen_ai.tool.call.arguments": "{}", "gen_ai.tool.call.result": "{}"}),
                 ("chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                           "gen_ai.usage.input_tokens": 200, "gen_ai.usage.output_tokens": 40,
                           "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", '
                                                     '"content": "It is on its way."}]}]'}),
                 ("other", {"app.step": "done"})]
        for i, (name, attributes) in enumerate(shape):
            spans.append((trace_id, root if i == 0 else uuid.uuid4().bytes[:8], b"" if i == 0 else root, name,
                          now + t * 1000 + i * 10, now + t * 1000 + (100 if i == 0 else i * 10 + 5), attributes))
    out = []
    for start in range(0, len(spans), BATCH):
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        for trace_id, span_id, parent, name, begin, end, attributes in reversed(spans[start:start + BATCH]):
            span = scope.spans.add()
            span.trace_id, span.span_id, span.parent_span_id, span.name = trace_id, span_id, parent, name
            span.start_time_unix_nano, span.end_time_unix_nano = begin, end
            for key, value in attributes.items():
                _attr(span, key, value)
        out.append(request.SerializeToString())
    return out


def decode_ceiling(payloads: list[bytes]) -> float:
    """Spans/s of reading the bodies and mapping their spans (no store, no broker)."""
    started = time.perf_counter()
    count = 0
    for body in payloads:
        decoded = otlp.spans_of(otlp.parse(body, otlp.PROTOBUF))
        for span in decoded.spans:
            points(span)
        count += len(decoded.spans)
    return count / (time.perf_counter() - started)


def append_ceiling(world, payloads: list[bytes]) -> float:
    """Events/s of the producer appending the events those spans become (the ingest's last step alone)."""
    events = []
    spans: dict[str, list[Span]] = {}
    for body in payloads:
        for span in otlp.spans_of(otlp.parse(body, otlp.PROTOBUF)).spans:
            spans.setdefault(span.trace_id, []).append(span)
    for trace_id, found in spans.items():
        events += [m.event for m in Timeline(f"ceiling-{trace_id}").feed(p for s in found for p in points(s))]

    async def run() -> float:
        async with EventLog(world, spool_dir=Path(tempfile.mkdtemp())) as log:
            started = time.perf_counter()
            await asyncio.gather(*(log.append_nowait(e) for e in events))
            return len(events) / (time.perf_counter() - started)
    return asyncio.run(run())


def in_log(world) -> int:
    return sum(high - low for low, high in watermarks(world, world.events_topic).values())


def through_ingest(world, url: str, token: str, payloads: list[bytes], expected: int) -> tuple[float, float]:
    """(spans/s accepted over HTTP, spans/s until their events are acknowledged by Kafka)."""
    before = in_log(world)
    started = time.perf_counter()
    for body in payloads:
        request = urllib.request.Request(f"{url}/v1/traces", data=body, method="POST", headers={
            "Content-Type": otlp.PROTOBUF, "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
    accepted = time.perf_counter() - started
    deadline = time.monotonic() + 600
    while in_log(world) - before < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {in_log(world) - before} of {expected} events reached the log")
        time.sleep(0.05)
    spans = len(payloads) and sum(len(otlp.spans_of(otlp.parse(b, otlp.PROTOBUF)).spans) for b in payloads)
    return spans / accepted, spans / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = current_settings()
    figures: dict[str, list[float]] = {"accepted": [], "acknowledged": [], "decode": [], "append": []}
    for run in range(args.runs):
        world = replace(private(base, f"bench_ingest_{uuid.uuid4().hex[:8]}"), spool_dir=Path(tempfile.mkdtemp()))
        auth = AuthStore(world)
        auth.setup()
        _, token = auth.create_token("agent", name="bench")
        env = {**os.environ, "AGENTLOG_EVENTS_TOPIC": world.events_topic, "AGENTLOG_DLQ_TOPIC": world.dlq_topic,
               "AGENTLOG_POSTGRES_SCHEMA": world.postgres_schema, "AGENTLOG_AUTH_SCHEMA": world.auth_schema,
            "AGENTLOG_KEYS_SCHEMA": world.keys_schema,
               "AGENTLOG_INGEST_SCHEMA": world.ingest_schema, "AGENTLOG_SPOOL_DIR": str(world.spool_dir)}
        port = 4318 + 100 + run
        process = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "ingest", "--port", str(port)],
                                   env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"{url}/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            payloads = bodies(args.traces)
            accepted, acknowledged = through_ingest(world, url, token, payloads, args.traces * EVENTS_PER_TRACE)
            figures["accepted"].append(accepted)
            figures["acknowledged"].append(acknowledged)
        finally:
            process.terminate()
            process.wait(30)
        figures["decode"].append(decode_ceiling(payloads))
        figures["append"].append(append_ceiling(world, payloads) / EVENTS_PER_TRACE * SPANS_PER_TRACE)
        drop(world)
        print(f"run {run + 1}: accepted {accepted:,.0f} spans/s, in the log {acknowledged:,.0f} spans/s; "
              f"ceilings: decode {figures['decode'][-1]:,.0f}, append {figures['append'][-1]:,.0f} spans/s",
              flush=True)
    result = {"traces": args.traces, "spans_per_trace": SPANS_PER_TRACE, "events_per_trace": EVENTS_PER_TRACE,
              "batch": BATCH, "runs": figures,
              "median": {name: round(statistics.median(values)) for name, values in figures.items()}}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"]))


if __name__ == "__main__":
    main()
