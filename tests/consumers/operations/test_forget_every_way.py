"""``agentlog forget --subject`` erases a person's conversations whichever way they came in: the SDK's
recorder (the subject named at the start, or only mid-conversation), the OTLP ingest (``user.id`` on the
resource), the OpenAI Agents SDK's adapter (the trace's metadata) and the LangChain/LangGraph adapter (the
run's metadata) — against the real services, the frameworks driven offline by scripted models."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from agentlog.consumers.operations.forget import forget
from agentlog.consumers.web.auth import AuthStore
from agentlog.deploy.settings import Settings
from agentlog.producers import Conversation, EventLog
from agentlog.producers.sync import SyncEventLog
from tests.consumers.operations.test_forget import _found, _running
from tests.consumers.test_end_to_end import project
from tests.producers.ingest.test_otlp import _start, _stop, _wait_for_log

agents = pytest.importorskip("agents")
pytest.importorskip("langgraph")

EMPTY = {"archive": 0, "views": 0, "documents": 0, "facts": 0}


async def _through_the_sdk(settings: Settings, subject: str, marker: str) -> list[str]:
    """One conversation that names its subject at the start, one that names it only after its first event."""
    async with EventLog(settings) as log:
        first = Conversation(log, agent="triage", subject_id=subject)
        await first.started(f"hello, I am {marker}")
        await first.response(f"hello {marker}, how can I help?")
        second = Conversation(log, agent="triage")
        await second.started(f"before I said who I am: {marker}")
        second.identify(subject)
        await second.response(f"thank you, {marker}")
    return [first.conversation_id, second.conversation_id]


def _through_otlp(settings: Settings, tmp_path: Path, subject: str, marker: str) -> str:
    """A GenAI trace from the OpenTelemetry SDK's exporter, its resource naming the user."""
    auth = AuthStore(settings)
    auth.setup()
    _, token = auth.create_token("agent", name="exporter")
    process, url = _start(settings, tmp_path / "ingest-spool", tmp_path / "ingest.log")
    conversation = f"otel-{uuid.uuid4().hex[:12]}"
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", "user.id": subject}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {token}"})))
        tracer = provider.get_tracer("tests.subjects")
        said = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"I am {marker}"}]}])
        answer = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": f"hi {marker}"}]}])
        with tracer.start_as_current_span("invoke_agent triage", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage",
                "gen_ai.conversation.id": conversation, "gen_ai.input.messages": said,
                "gen_ai.output.messages": answer}):
            with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3}):
                time.sleep(0.002)
        provider.shutdown()
        events = _wait_for_log(settings, 3)
        assert [e.subject_id for e in events if e.conversation_id == conversation] == [subject] * 3
    finally:
        _stop(process)
    return conversation


def test_forget_by_subject_erases_what_came_in_every_way(isolated: Settings, tmp_path: Path) -> None:
    from agentlog.producers.adapters.langchain import AgentlogCallbackHandler
    from agentlog.producers.adapters.openai_agents import AgentlogProcessor
    from tests.producers.test_adapters import _run_langgraph, _run_support_conversation

    tag = uuid.uuid4().hex[:10]
    subject, other = f"user-{tag}", f"user-{tag}-other"
    world = replace(isolated, spool_dir=tmp_path / "spool")
    markers = {way: f"zq{way}{tag}" for way in ("sdk", "otlp", "agents", "langgraph", "kept")}

    otlp = _through_otlp(world, tmp_path, subject, markers["otlp"])
    sdk = asyncio.run(_through_the_sdk(world, subject, markers["sdk"]))
    with SyncEventLog(world) as log:
        _run_support_conversation(AgentlogProcessor(log), guardrail_trips=False, group=f"agents-{tag}",
                                  message=f"Refund order ORD-5521 for {markers['agents']}",
                                  metadata={"user_id": subject})
        _run_langgraph(AgentlogCallbackHandler(log, agents={"triage", "refunds"}), thread=f"langgraph-{tag}",
                       message=f"Refund order ORD-5521 for {markers['langgraph']}", metadata={"user_id": subject})
        _run_langgraph(AgentlogCallbackHandler(log, agents={"triage", "refunds"}), thread=f"kept-{tag}",
                       message=f"Refund order ORD-5521 for {markers['kept']}", metadata={"user_id": other})
    project(world)
    for way, marker in markers.items():
        assert _found(world, marker) != EMPTY, f"{way}: its text never reached the stores"

    stop, threads = _running(world)
    try:
        done = forget(world, subject=subject, requested_by="privacy-team", wait=90)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert sorted(done.conversations) == sorted([*sdk, otlp, f"agents-{tag}", f"langgraph-{tag}"])
    assert all(store.applied for store in done.stores)
    for way in ("sdk", "otlp", "agents", "langgraph"):
        assert _found(world, markers[way]) == EMPTY, f"{way}: its text is still in a store"
    assert _found(world, markers["kept"]) != EMPTY  # another person's run keeps its text
