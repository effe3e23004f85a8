"""The OTLP/HTTP ingest, run as ``agentlog ingest``, fed by the OpenTelemetry SDK's own exporter: GenAI spans
become one conversation's events, gapless and exact in every store, whatever order and batches they come in."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.kafka import read_to_end
from agentlog.deploy.settings import Settings
from agentlog.projections.dashboard import connect
from agentlog.schemas import Codec
from tests.conftest import ROOT, agentlog, clickhouse_rows, env_of, opened
from tests.consumers.test_end_to_end import project
from tests.consumers.web.conftest import free_port


@dataclass
class Served:
    url: str
    settings: Settings
    token: str
    auth: AuthStore

    def post(self, body: bytes, *, kind: str = "application/x-protobuf", token: str | None = "",
             encoding: str | None = None) -> tuple[int, bytes, dict]:
        headers = {"Content-Type": kind}
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token}"
        if encoding:
            headers["Content-Encoding"] = encoding
        request = urllib.request.Request(f"{self.url}/v1/traces", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as error:
            return error.code, error.read(), {k.lower(): v for k, v in error.headers.items()}


def _start(settings: Settings, spool: Path, log_path: Path, **extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **env_of(settings), "AGENTLOG_SPOOL_DIR": str(spool), **extra}
    log = log_path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "ingest", "--port", str(port)],
                               env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return process, url
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"agentlog ingest did not answer: {log_path.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def ingest(isolated: Settings, tmp_path: Path):
    world = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse")
    auth = AuthStore(world)
    auth.setup()
    _, token = auth.create_token("agent", name="exporter")
    process, url = _start(world, tmp_path / "spool", tmp_path / "ingest.log")
    try:
        yield Served(url, world, token, auth)
    finally:
        _stop(process)


def _provider(exporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # each span sent alone, as it ends: children first
    return provider


def _run(provider: TracerProvider, conversation: str, *, refund_fails: bool = True) -> None:
    """A support conversation as an instrumented framework traces it (GenAI semantic conventions)."""
    tracer = provider.get_tracer("tests.genai")
    user = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Refund order ORD-5521 please"}]}])
    with tracer.start_as_current_span("invoke_agent triage", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage",
            "gen_ai.conversation.id": conversation, "gen_ai.input.messages": user, "app.tenant_tier": "gold"}):
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.system": "openai",
                "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30}):
            time.sleep(0.002)
        with tracer.start_as_current_span("execute_tool lookup_order", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
                "gen_ai.tool.call.id": "call_1", "gen_ai.tool.call.arguments": '{"order_id": "ORD-5521"}',
                "gen_ai.tool.call.result": '{"status": "delivered", "total": 42.5}'}):
            time.sleep(0.002)
        with tracer.start_as_current_span("invoke_agent refunds", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "refunds",
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                    {"type": "text", "content": "Your refund REF-3301 is on its way."}]}])}):
            with tracer.start_as_current_span("execute_tool issue_refund", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "issue_refund",
                    "gen_ai.tool.call.id": "call_2", "gen_ai.tool.call.arguments": '{"amount": 42.5}'}) as tool:
                if refund_fails:
                    tool.set_attribute("error.type", "CardDeclined")
                    tool.set_status(Status(StatusCode.ERROR, "card declined"))
                time.sleep(0.002)
            with tracer.start_as_current_span("chat gpt-4o", attributes={
                    "llm.request.type": "chat", "llm.request.model": "gpt-4o",  # an older instrumentation's names
                    "gen_ai.usage.prompt_tokens": 200, "gen_ai.usage.completion_tokens": 40}):
                time.sleep(0.002)


EXPECTED = ["conversation_started", "llm_called", "tool_called", "tool_result", "handoff_initiated", "tool_called",
            "tool_result", "error_occurred", "llm_called", "response_generated"]


def _wait_for_log(settings: Settings, count: int, timeout: float = 60) -> list:
    codec = Codec()
    deadline = time.monotonic() + timeout
    while True:
        events = opened(settings, [codec.decode(m.value()) for m in read_to_end(settings, settings.events_topic)])
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def _hex_ids(node):
    if isinstance(node, dict):
        return {k: (base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else _hex_ids(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def test_genai_spans_from_the_sdks_exporter_become_one_exact_conversation_in_every_store(ingest: Served) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{ingest.url}/v1/traces", compression=Compression.Gzip,
                                headers={"Authorization": f"Bearer {ingest.token}"})
    _run(_provider(exporter), "conv-otel-gzip")                       # protobuf, gzip, one request per span

    collected = InMemorySpanExporter()
    _run(_provider(collected), "conv-otel-retried", refund_fails=False)
    finished = collected.get_finished_spans()
    plain = OTLPSpanExporter(endpoint=f"{ingest.url}/v1/traces", headers={"Authorization": f"Bearer {ingest.token}"})
    assert plain.export(finished[3:]) is SpanExportResult.SUCCESS     # split over two requests,
    assert plain.export(finished[:3]) is SpanExportResult.SUCCESS     # the later spans first,
    assert plain.export(finished) is SpanExportResult.SUCCESS         # then the whole batch again (a retry)

    in_json = InMemorySpanExporter()
    _run(_provider(in_json), "conv-otel-json")
    body = json.dumps(_hex_ids(json_format.MessageToDict(encode_spans(list(reversed(in_json.get_finished_spans()))))))
    status, answer, _ = ingest.post(body.encode(), kind="application/json")
    assert status == 200 and json.loads(answer) == {}

    settings = ingest.settings
    events = _wait_for_log(settings, 3 * len(EXPECTED) - 1)
    by_conversation: dict[str, list] = {}
    for event in events:
        by_conversation.setdefault(event.conversation_id, []).append(event)
    assert sorted(by_conversation) == ["conv-otel-gzip", "conv-otel-json", "conv-otel-retried"]
    for conversation, found in by_conversation.items():
        assert [e.sequence_number for e in found] == list(range(1, len(found) + 1)), conversation
        expected = EXPECTED if conversation != "conv-otel-retried" else [t for t in EXPECTED if t != "error_occurred"]
        assert [e.event_type for e in found] == expected, conversation
        assert len({e.event_id for e in found}) == len(found)
    gzip_events = by_conversation["conv-otel-gzip"]
    assert gzip_events[0].payload["user_message"] == "Refund order ORD-5521 please"
    assert gzip_events[0].agent_name == "triage" and gzip_events[5].agent_name == "refunds"
    assert gzip_events[1].payload["model"] == "gpt-4o-mini" and gzip_events[1].payload["input_tokens"] == 120
    assert gzip_events[1].payload["cost_usd"] == pytest.approx((120 * 0.15 + 30 * 0.60) / 1e6)
    assert gzip_events[8].payload["model"] == "gpt-4o" and gzip_events[8].payload["output_tokens"] == 40
    assert gzip_events[3].payload["output_json"] == '{"status": "delivered", "total": 42.5}'
    assert gzip_events[6].payload["status"] == "error"
    assert (gzip_events[7].payload["error_type"], gzip_events[7].payload["message"]) == ("CardDeclined", "card declined")
    assert gzip_events[9].payload["response"] == "Your refund REF-3301 is on its way."
    assert gzip_events[0].attributes["app.tenant_tier"] == "gold"  # unmapped, kept, not dropped
    assert gzip_events[1].attributes["gen_ai.system"] == "openai" and "gen_ai.request.model" not in gzip_events[1].attributes
    assert len({e.correlation_id for e in gzip_events}) == 1 and len(gzip_events[0].correlation_id) == 32

    project(settings)
    with connect(settings, role=PostgresRole.OWNER) as conn:
        rows = conn.execute("SELECT conversation_id, count(*), max(sequence_number) FROM agent_events "
                            "GROUP BY conversation_id ORDER BY 1").fetchall()
        views = dict(conn.execute("SELECT id, tool_count FROM conversation_views").fetchall())
    assert [(c, n) for c, n, _ in rows] == [(c, len(by_conversation[c])) for c in sorted(by_conversation)]
    assert all(n == last for _, n, last in rows) and views["conv-otel-gzip"] == 2
    [(count, unique, tokens)] = clickhouse_rows(
        settings, f"SELECT count(), uniqExact(event_id), sum(input_tokens) FROM {settings.clickhouse_database}."
                  "agent_events WHERE conversation_id = 'conv-otel-gzip'")
    assert (count, unique, tokens) == (len(EXPECTED), len(EXPECTED), 320)
    from agentlog.deploy import clients
    es = clients.elasticsearch(settings, user=SearchUser.ADMIN)
    es.indices.refresh(index=settings.search_alias)
    document = es.get(index=settings.search_alias, id="conv-otel-gzip")["_source"]
    assert "issue_refund" in json.dumps(document) and "REF-3301" in json.dumps(document)


def _span_request(trace_id: bytes, span_id: bytes = b"\x01" * 8) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    now = time.time_ns()
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = trace_id, span_id, "chat"
    span.start_time_unix_nano, span.end_time_unix_nano = now - 1000, now
    return request.SerializeToString()


def _post_large(served: Served, size: int) -> bytes:
    """The status line the server answers a body of ``size`` bytes with (it may stop reading before the end)."""
    import socket
    from urllib.parse import urlsplit
    where = urlsplit(served.url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: application/x-protobuf\r\n"
                     f"Authorization: Bearer {served.token}\r\nContent-Length: {size}\r\n\r\n".encode())
        try:
            sock.sendall(b"x" * size)
        except OSError:
            pass  # it answered and closed before taking it all
        try:
            return sock.recv(200)
        except OSError:
            return b""


def test_hostile_or_broken_exports_get_one_clear_answer_and_stop_nothing(ingest: Served) -> None:
    status, body, _ = ingest.post(b"\xff\xfe not protobuf")
    assert status == 400 and b"not an OTLP ExportTraceServiceRequest" in body
    status, body, _ = ingest.post(b"[1, 2]", kind="application/json")
    assert status == 400 and json.loads(body)["message"].startswith("the body is JSON but not an object")
    status, body, _ = ingest.post(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
                                  kind="application/json")
    assert status == 400 and b"is not hex" in body
    status, body, _ = ingest.post(b"hello", kind="text/plain")
    assert status == 415
    assert _post_large(ingest, 9 << 20).startswith(b"HTTP/1.1 413")
    status, body, _ = ingest.post(gzip.compress(b"\x00" * (64 << 20)), encoding="gzip")  # a 64 MiB gzip bomb
    assert status == 413 and b"inflates past" in body
    status, body, _ = ingest.post(b"not gzip", encoding="gzip")
    assert status == 400
    status, body, _ = ingest.post(_span_request(b"\x00" * 16))
    answer = ExportTraceServiceResponse.FromString(body)
    assert status == 200 and answer.partial_success.rejected_spans == 1
    assert "no usable trace id" in answer.partial_success.error_message
    status, body, headers = ingest.post(_span_request(b"\x07" * 16), token=None)
    assert status == 401
    _, support = ingest.auth.create_token("support", name="not-an-agent")
    status, body, _ = ingest.post(_span_request(b"\x07" * 16), token=support)
    assert status == 403
    status, body, _ = ingest.post(_span_request(b"\x08" * 16))  # and it still takes what is sound
    assert status == 200 and ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans == 0


def test_while_postgres_is_away_an_export_is_told_to_come_back_later_and_a_refused_password_is_a_mistake(isolated: Settings, tmp_path: Path) -> None:
    auth = AuthStore(isolated)
    auth.setup()
    _, token = auth.create_token("agent", name="exporter")
    port = free_port()
    process, url = _start(isolated, tmp_path / "spool", tmp_path / "ingest.log")
    _stop(process)
    process, url = _start(isolated, tmp_path / "spool", tmp_path / "ingest.log",
                          AGENTLOG_POSTGRES_DSN_INGEST=f"postgresql://agentlog_ingest:x@127.0.0.1:{port}/agentlog")
    try:
        status, body, headers = Served(url, isolated, token, auth).post(_span_request(b"\x09" * 16))
        assert status == 503 and headers.get("retry-after") == "5" and b"send them again" in body
    finally:
        _stop(process)
    wrong = re.sub(r"password=\S+", "password=wrong", isolated.postgres_dsn_for(PostgresRole.INGEST))
    process, url = _start(isolated, tmp_path / "spool", tmp_path / "ingest.log", AGENTLOG_POSTGRES_DSN_INGEST=wrong)
    try:  # a refused password is a mistake to fix, not an outage to wait out: no Retry-After
        status, body, headers = Served(url, isolated, token, auth).post(_span_request(b"\x0a" * 16))
        assert status == 500 and "retry-after" not in headers and b"refused" in body and b"wrong" not in body
    finally:
        _stop(process)


def _events_of(settings: Settings) -> list:
    codec = Codec()
    return opened(settings, [codec.decode(m.value()) for m in read_to_end(settings, settings.events_topic)])


def _exported(conversation: str) -> list:
    collected = InMemorySpanExporter()
    _run(_provider(collected), conversation)
    return list(collected.get_finished_spans())


def test_spans_taken_while_kafka_is_away_reach_the_log_once_it_is_back(isolated: Settings, tmp_path: Path) -> None:
    auth = AuthStore(isolated)
    auth.setup()
    _, token = auth.create_token("agent", name="exporter")
    down = free_port()
    spool = tmp_path / "spool"
    process, url = _start(isolated, spool, tmp_path / "ingest.log", AGENTLOG_KAFKA_BOOTSTRAP=f"127.0.0.1:{down}")
    try:
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {token}"})
        assert exporter.export(_exported("conv-kafka-away")) is SpanExportResult.SUCCESS  # taken, though Kafka is away
        deadline = time.monotonic() + 30
        while not list(spool.rglob("*.log")) and time.monotonic() < deadline:
            time.sleep(0.2)  # the ingest's producer spools what the broker does not take
        time.sleep(3)
    finally:
        _stop(process)
    assert _events_of(isolated) == []
    done = agentlog("spool", "flush", env={**env_of(isolated), "AGENTLOG_SPOOL_DIR": str(spool)})
    assert done.returncode == 0, done.stderr
    events = _events_of(isolated)
    assert [e.event_type for e in events] == EXPECTED
    assert [e.sequence_number for e in events] == list(range(1, len(EXPECTED) + 1))


def test_a_trace_split_across_a_killed_ingest_is_numbered_once_and_gapless(ingest: Served, tmp_path: Path) -> None:
    spans = _exported("conv-restarted")
    exporter = OTLPSpanExporter(endpoint=f"{ingest.url}/v1/traces", headers={"Authorization": f"Bearer {ingest.token}"})
    assert exporter.export(spans[:4]) is SpanExportResult.SUCCESS   # kept in Postgres; the root has not come
    import signal
    for line in subprocess.run(["pgrep", "-f", f"ingest --port {ingest.url.rsplit(':', 1)[1]}"], capture_output=True,
                               text=True).stdout.split():
        os.kill(int(line), signal.SIGKILL)
    process, url = _start(ingest.settings, tmp_path / "spool-2", tmp_path / "ingest-2.log")
    try:
        again = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {ingest.token}"})
        assert again.export(spans) is SpanExportResult.SUCCESS      # the exporter's retry of all, and the rest
        events = _wait_for_log(ingest.settings, len(EXPECTED))
    finally:
        _stop(process)
    assert [e.event_type for e in events] == EXPECTED
    assert [e.sequence_number for e in events] == list(range(1, len(EXPECTED) + 1))
