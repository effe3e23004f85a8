"""The framework adapters, driven by the real frameworks with models of the test's own (no network): what the
framework traced is what ``agentlog replay`` shows."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agentlog.deploy.settings import Settings
from agentlog.producers.sync import SyncEventLog
from agentlog.schemas.events import EventType
from tests.conftest import agentlog, env_of
from tests.consumers.test_end_to_end import project

agents = pytest.importorskip("agents")


class ScriptedModel(agents.Model):
    """Answers from a script, one turn after another, and traces each turn as a generation (as the SDK's own
    models do)."""

    def __init__(self, name: str, turns: list[Any]) -> None:
        self.name = name
        self.turns = list(turns)

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
                           *, previous_response_id=None, conversation_id=None, prompt=None):
        from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText
        turn = self.turns.pop(0)
        if isinstance(turn, tuple):  # (tool, arguments): a function call
            output = [ResponseFunctionToolCall(id=f"fc_{len(self.turns)}", call_id=f"call_{self.name}_{len(self.turns)}",
                                               name=turn[0], arguments=json.dumps(turn[1]), type="function_call")]
            said = [{"role": "assistant", "content": None, "tool_calls": [{"name": turn[0]}]}]
        else:
            output = [ResponseOutputMessage(id="msg_1", role="assistant", status="completed", type="message",
                                            content=[ResponseOutputText(text=turn, type="output_text", annotations=[])])]
            said = [{"role": "assistant", "content": turn}]
        items = input if isinstance(input, list) else [{"role": "user", "content": input}]
        users = [{"role": "user", "content": i["content"]} for i in items
                 if isinstance(i, dict) and i.get("role") == "user" and isinstance(i.get("content"), str)]
        with agents.generation_span(input=users, output=said, model=self.name,
                                    usage={"input_tokens": 100, "output_tokens": 10}):
            pass
        return agents.ModelResponse(output=output, usage=agents.Usage(requests=1, input_tokens=100, output_tokens=10,
                                                                       total_tokens=110), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError


def _run_support_conversation(processor, *, guardrail_trips: bool = True, message: str = "Refund order ORD-5521 please",
                              group: str = "conv-agents-sdk-1", metadata: dict | None = None) -> str:
    """Two agents, a handoff, a tool that fails once, and a guardrail that looks at the input."""
    attempts = {"issue_refund": 0}

    @agents.function_tool
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        return json.dumps({"order_id": order_id, "status": "delivered", "total": 42.5})

    @agents.function_tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        attempts["issue_refund"] += 1
        if attempts["issue_refund"] == 1:
            raise RuntimeError("payment provider timed out")
        return json.dumps({"refund_id": "REF-3301", "amount": amount})

    @agents.input_guardrail
    def no_card_numbers(context, agent, text):
        return agents.GuardrailFunctionOutput(output_info={"checked": True},
                                              tripwire_triggered="4111" in str(text))

    refunds = agents.Agent(name="refunds", instructions="Refund orders.", tools=[issue_refund],
                           model=ScriptedModel("gpt-4o", [("issue_refund", {"order_id": "ORD-5521", "amount": 42.5}),
                                                          ("issue_refund", {"order_id": "ORD-5521", "amount": 42.5}),
                                                          "Your refund REF-3301 is on its way."]))
    triage = agents.Agent(name="triage", instructions="Route.", tools=[lookup_order], handoffs=[refunds],
                          input_guardrails=[no_card_numbers],
                          model=ScriptedModel("gpt-4o-mini", [("lookup_order", {"order_id": "ORD-5521"}),
                                                              ("transfer_to_refunds", {})]))
    if processor is not None:
        agents.set_trace_processors([processor])
    try:
        result = asyncio.run(agents.Runner.run(triage, message, run_config=agents.RunConfig(
            group_id=group, trace_metadata=metadata)))
        if guardrail_trips:
            with pytest.raises(agents.InputGuardrailTripwireTriggered):
                asyncio.run(agents.Runner.run(triage, "my card is 4111 1111 1111 1111",
                                              run_config=agents.RunConfig(group_id="conv-agents-sdk-2")))
    finally:
        if processor is not None:
            processor.force_flush()
            agents.set_trace_processors([])
    return result.final_output


def test_an_openai_agents_sdk_run_through_the_adapter_replays_as_the_sdk_traced_it(isolated: Settings,
                                                                                  tmp_path: Path) -> None:
    from agentlog.producers.adapters.openai_agents import AgentlogProcessor
    world = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse", spool_dir=tmp_path / "spool")
    with SyncEventLog(world) as log:
        answer = _run_support_conversation(AgentlogProcessor(log))
    assert answer == "Your refund REF-3301 is on its way."
    project(world, ["dashboard"])
    env = {**env_of(world), "AGENTLOG_SPOOL_DIR": str(tmp_path / "spool")}
    replayed = json.loads(agentlog("replay", "conv-agents-sdk-1", "--json", env=env).stdout)
    timeline = [(e["event_type"], e["agent_name"]) for e in replayed["events"]]
    assert timeline == [
        ("conversation_started", "triage"), ("llm_called", "triage"),
        ("tool_called", "triage"), ("tool_result", "triage"), ("llm_called", "triage"),
        ("handoff_initiated", "triage"),
        ("llm_called", "refunds"), ("tool_called", "refunds"), ("tool_result", "refunds"),
        ("error_occurred", "refunds"),
        ("llm_called", "refunds"), ("tool_called", "refunds"), ("tool_result", "refunds"),
        ("llm_called", "refunds"), ("response_generated", "refunds")]
    events = replayed["events"]
    assert [e["sequence_number"] for e in events] == list(range(1, 16))
    assert events[0]["payload"]["user_message"] == "Refund order ORD-5521 please"
    assert events[5]["payload"]["from_agent"] == "triage" and events[5]["payload"]["to_agent"] == "refunds"
    assert events[8]["payload"]["status"] == "error"  # the SDK redacts the exception's text; the call is named
    assert events[9]["payload"]["tool_call_id"] == events[7]["payload"]["tool_call_id"] == events[8]["payload"][
        "tool_call_id"]
    assert json.loads(events[12]["payload"]["output_json"])["refund_id"] == "REF-3301"
    assert events[1]["payload"]["model"] == "gpt-4o-mini" and events[1]["payload"]["input_tokens"] == 100
    assert replayed["state"]["final_response"] == "Your refund REF-3301 is on its way."
    assert replayed["state"]["handoff_count"] == 1 and replayed["state"]["active_agent"] == "refunds"

    blocked = json.loads(agentlog("replay", "conv-agents-sdk-2", "--json", env=env).stdout)["events"]
    kinds = [e["event_type"] for e in blocked]
    assert kinds[0] == "conversation_started" and "guardrail_triggered" in kinds
    assert next(e for e in blocked if e["event_type"] == "guardrail_triggered")["payload"]["guardrail"] == \
        "no_card_numbers"


def _run_langgraph(handler, *, message: str = "Refund order ORD-5521 please", thread: str = "conv-langgraph-1",
                   metadata: dict | None = None) -> str:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    class ToolCallingFake(GenericFakeChatModel):
        def bind_tools(self, tools, **kwargs):
            return self

    def said(content="", calls=(), tokens=(50, 5)):
        return AIMessage(content=content, tool_calls=[{"name": n, "args": a, "id": f"call_{n}"} for n, a in calls],
                         usage_metadata={"input_tokens": tokens[0], "output_tokens": tokens[1],
                                         "total_tokens": sum(tokens)},
                         response_metadata={"model_name": "gpt-4o-mini"})

    @tool
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        return json.dumps({"order_id": order_id, "status": "delivered"})

    @tool
    def issue_refund(order_id: str) -> str:
        """Refund an order."""
        raise RuntimeError("payment provider timed out")

    triage_model = ToolCallingFake(messages=iter([said(calls=[("lookup_order", {"order_id": "ORD-5521"})]),
                                                  said("Passing you to refunds.")]))
    refunds_model = ToolCallingFake(messages=iter([said(calls=[("issue_refund", {"order_id": "ORD-5521"})]),
                                                   said("The refund failed; a person will call you.", tokens=(80, 9))]))

    def triage(state):
        return {"messages": [triage_model.invoke(state["messages"])]}

    def refunds(state):
        return {"messages": [refunds_model.invoke(state["messages"])]}

    def route(after_tools: str, otherwise: str):
        return lambda state: after_tools if state["messages"][-1].tool_calls else otherwise

    graph = StateGraph(MessagesState)
    graph.add_node("triage", triage)
    graph.add_node("triage_tools", ToolNode([lookup_order]))
    graph.add_node("refunds", refunds)
    graph.add_node("refund_tools", ToolNode([issue_refund], handle_tool_errors=True))
    graph.add_edge(START, "triage")
    graph.add_conditional_edges("triage", route("triage_tools", "refunds"))
    graph.add_edge("triage_tools", "triage")
    graph.add_conditional_edges("refunds", route("refund_tools", END))
    graph.add_edge("refund_tools", "refunds")
    result = graph.compile().invoke({"messages": [HumanMessage(message)]},
                                    config={"callbacks": [handler], "metadata": {"thread_id": thread, **(metadata or {})}})
    handler.flush()
    return result["messages"][-1].content


def test_a_langgraph_run_through_the_callback_handler_replays_as_it_ran(isolated: Settings, tmp_path: Path) -> None:
    pytest.importorskip("langgraph")
    from agentlog.producers.adapters.langchain import AgentlogCallbackHandler
    world = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse", spool_dir=tmp_path / "spool")
    with SyncEventLog(world) as log:
        answer = _run_langgraph(AgentlogCallbackHandler(log, agents={"triage", "refunds"}))
    assert answer == "The refund failed; a person will call you."
    project(world, ["dashboard"])
    env = {**env_of(world), "AGENTLOG_SPOOL_DIR": str(tmp_path / "spool")}
    replayed = json.loads(agentlog("replay", "conv-langgraph-1", "--json", env=env).stdout)
    events = replayed["events"]
    assert [(e["event_type"], e["agent_name"]) for e in events] == [
        ("conversation_started", "triage"), ("llm_called", "triage"),
        ("tool_called", "triage"), ("tool_result", "triage"), ("llm_called", "triage"),
        ("handoff_initiated", "triage"),
        ("llm_called", "refunds"), ("tool_called", "refunds"), ("tool_result", "refunds"),
        ("error_occurred", "refunds"), ("llm_called", "refunds"), ("response_generated", "refunds")]
    assert [e["sequence_number"] for e in events] == list(range(1, 13))
    assert events[0]["payload"]["user_message"] == "Refund order ORD-5521 please"
    assert json.loads(events[2]["payload"]["input_json"]) == {"order_id": "ORD-5521"}
    assert "delivered" in events[3]["payload"]["output_json"]
    assert events[8]["payload"]["status"] == "error" and "timed out" in events[9]["payload"]["message"]
    assert (events[6]["payload"]["input_tokens"], events[10]["payload"]["output_tokens"]) == (50, 9)
    assert replayed["state"]["handoff_count"] == 1


def _shape(events: list) -> list[tuple]:
    """What a run's events say, without ids, times or the conversation's name."""
    def of(e):
        p = e.payload
        return (e.event_type, e.agent_name, p.get("tool_name"), p.get("status"), p.get("model"),
                p.get("input_tokens"), p.get("from_agent"), p.get("to_agent"), p.get("user_message"), p.get("response"))
    return [of(e) for e in events]


def test_the_same_agents_sdk_run_through_openinference_and_the_ingest_lands_as_the_adapters_events(
        isolated: Settings, tmp_path: Path) -> None:
    pytest.importorskip("openinference.instrumentation.openai_agents")
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from agentlog.consumers.web.auth import AuthStore
    from agentlog.deploy.kafka import read_to_end
    from agentlog.producers.adapters.openai_agents import AgentlogProcessor
    from agentlog.schemas import Codec
    from tests.producers.ingest.test_otlp import _start, _stop

    world = replace(isolated, spool_dir=tmp_path / "spool")
    with SyncEventLog(world) as log:
        _run_support_conversation(AgentlogProcessor(log), guardrail_trips=False)

    auth = AuthStore(world)
    auth.setup()
    _, token = auth.create_token("agent", name="openinference")
    process, url = _start(world, tmp_path / "ingest-spool", tmp_path / "ingest.log")
    instrumentor = OpenAIAgentsInstrumentor()
    try:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {token}"})))
        instrumentor.instrument(tracer_provider=provider)
        try:
            _run_support_conversation(None, guardrail_trips=False)
        finally:
            instrumentor.uninstrument()
            provider.shutdown()
        codec = Codec()
        deadline = time.monotonic() + 60
        while True:
            events = [codec.decode(m.value()) for m in read_to_end(world, world.events_topic)]
            ingested = [e for e in events if e.conversation_id.startswith("trace-")]
            adapted = [e for e in events if e.conversation_id == "conv-agents-sdk-1"]
            if len(ingested) >= len(adapted) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        _stop(process)
    assert len(adapted) == 15
    assert _shape(ingested) == _shape(adapted)


def test_a_refund_run_of_the_agents_sdk_reruns_from_step_4_with_another_model_and_answer(isolated: Settings,
                                                                                         tmp_path: Path) -> None:
    """The SDK's run recorded through the adapter; then the same agents, another model and another last answer,
    re-run on a fork at step 4: the refund tool is answered from the recording (its failure, then its result),
    never called; the new run names its source and parts from it after step 4."""
    from agentlog.consumers.operations.read_models import ReadModels
    from agentlog.producers import EventLog, Rerun, rerun
    from agentlog.producers.adapters.openai_agents import AgentlogProcessor
    from agentlog.producers.history import events_from_kafka
    from agentlog.projections.fold import fold
    world = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse", spool_dir=tmp_path / "spool")
    with SyncEventLog(world) as log:
        _run_support_conversation(AgentlogProcessor(log), guardrail_trips=False)
    refunded: list[dict] = []

    async def issue_refund_for_real(order_id: str, amount: float) -> str:
        refunded.append({"order_id": order_id, "amount": amount})
        return json.dumps({"refund_id": "REF-NEW", "amount": amount})

    async def agent(run: Rerun) -> str:
        state = fold(run.fork.conversation_id, run.history)

        @agents.function_tool
        async def issue_refund(order_id: str, amount: float) -> str:
            """Refund an order."""
            return await run.tool("issue_refund")(order_id=order_id, amount=amount)

        call = ("issue_refund", {"order_id": "ORD-5521", "amount": 42.5})
        refunds = agents.Agent(name="refunds", instructions="Refund orders.", tools=[issue_refund],
                               model=ScriptedModel("gpt-4.1-rerun", [call, call, "Refunded, with a voucher."]))
        triage = agents.Agent(name="triage", instructions="Route.", handoffs=[refunds],
                              model=ScriptedModel("gpt-4.1-rerun", [("transfer_to_refunds", {})]))
        agents.set_trace_processors([])
        result = await agents.Runner.run(triage, state.user_message)
        await run.fork.llm_called("gpt-4.1-rerun", input_tokens=100, output_tokens=10, latency_ms=1.0, cost_usd=0.0)
        await run.fork.record(EventType.RESPONSE_GENERATED, {"response": result.final_output}, agent="refunds")
        return result.final_output

    async def go() -> Rerun:
        async with EventLog(world) as log:
            return await rerun(log, "conv-agents-sdk-1", at=4, agent=agent,
                               tools={"issue_refund": issue_refund_for_real})
    run = asyncio.run(go())
    assert run.answer == "Refunded, with a voucher." and refunded == [] and (run.answered, run.called) == (2, 0)
    forked = events_from_kafka(world, run.fork.conversation_id)
    assert [e.event_type.value for e in forked[4:]] == [
        "tool_called", "error_occurred", "tool_called", "tool_result", "llm_called", "response_generated"]
    assert all(e.forked_from_conversation == "conv-agents-sdk-1" for e in forked[:4])
    assert json.loads(forked[7].payload["output_json"])["refund_id"] == "REF-3301", "the recorded answer"
    models = ReadModels(world)
    try:
        compared = models.compare("conv-agents-sdk-1", run.fork.conversation_id)
    finally:
        models.close()
    assert compared["first_difference"] == 5 and compared["totals"]["b"]["final_response"] == run.answer



def test_a_langgraph_refund_run_reruns_from_step_4_answered_from_the_recording(isolated: Settings,
                                                                               tmp_path: Path) -> None:
    """The LangGraph run recorded through the handler, re-run on a fork at step 4 by a graph of the refunds agent
    alone with another model: the refund tool's recorded failure answers it (the tool is never called), and the
    agent answers otherwise."""
    pytest.importorskip("langgraph")
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.tools import StructuredTool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    from agentlog.producers import EventLog, Rerun, rerun
    from agentlog.producers.adapters.langchain import AgentlogCallbackHandler
    from agentlog.producers.history import events_from_kafka
    from agentlog.projections.fold import fold
    world = replace(isolated, clickhouse_url=f"chdb://{tmp_path}/clickhouse", spool_dir=tmp_path / "spool")
    with SyncEventLog(world) as log:
        _run_langgraph(AgentlogCallbackHandler(log, agents={"triage", "refunds"}))
    called: list[str] = []

    async def issue_refund_for_real(order_id: str) -> str:
        called.append(order_id)
        return "refunded"

    class ToolCallingFake(GenericFakeChatModel):
        def bind_tools(self, tools, **kwargs):
            return self

    async def agent(run: Rerun) -> str:
        state = fold(run.fork.conversation_id, run.history)
        replayed = StructuredTool.from_function(coroutine=run.tool("issue_refund"), name="issue_refund",
                                                description="Refund an order.", args_schema={
                                                    "type": "object", "properties": {"order_id": {"type": "string"}},
                                                    "required": ["order_id"]})
        model = ToolCallingFake(messages=iter([
            AIMessage(content="", tool_calls=[{"name": "issue_refund", "args": {"order_id": "ORD-5521"},
                                               "id": "call_1"}]),
            AIMessage(content="The provider is down; we will refund by bank transfer today.")]))

        async def refunds(messages_state):
            return {"messages": [await model.ainvoke(messages_state["messages"])]}

        graph = StateGraph(MessagesState)
        graph.add_node("refunds", refunds)
        graph.add_node("refund_tools", ToolNode([replayed], handle_tool_errors=True))
        graph.add_edge(START, "refunds")
        graph.add_conditional_edges("refunds", lambda s: "refund_tools" if s["messages"][-1].tool_calls else END)
        graph.add_edge("refund_tools", "refunds")
        result = await graph.compile().ainvoke({"messages": [HumanMessage(state.user_message)]})
        answer = result["messages"][-1].content
        await run.fork.llm_called("claude-rerun", input_tokens=80, output_tokens=12, latency_ms=1.0, cost_usd=0.0)
        await run.fork.record(EventType.RESPONSE_GENERATED, {"response": answer}, agent="refunds")
        return answer

    async def go() -> Rerun:
        async with EventLog(world) as log:
            return await rerun(log, "conv-langgraph-1", at=4, agent=agent, tools={"issue_refund": issue_refund_for_real})
    run = asyncio.run(go())
    assert run.answer == "The provider is down; we will refund by bank transfer today."
    assert called == [] and (run.answered, run.called) == (1, 0)
    forked = events_from_kafka(world, run.fork.conversation_id)
    assert [e.sequence_number for e in forked] == list(range(1, 9))
    assert [e.event_type.value for e in forked[4:]] == ["tool_called", "error_occurred", "llm_called",
                                                        "response_generated"]
    assert "timed out" in forked[5].payload["message"] and forked[6].payload["model"] == "claude-rerun"
