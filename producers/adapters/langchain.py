"""LangChain and LangGraph runs recorded as agentlog events (``pip install agentlog[langchain]``).

    from agentlog.producers.adapters.langchain import AgentlogCallbackHandler
    graph.invoke(inputs, config={"callbacks": [AgentlogCallbackHandler()]})

One invocation (a root run) is one conversation: its ``thread_id`` or ``conversation_id`` from the config's
metadata or configurable, else the root run's id; its subject is the metadata's ``user_id`` (or
``subject_id``): ``config={"metadata": {"user_id": ...}}``. A callback sees the config's metadata, not its
``configurable``, of which LangGraph copies only ``thread_id`` and its own keys into the metadata.

A LangGraph node that is an agent (``agents``: their names; by default every node whose name does not say
``tool``) starting while another agent was active is a handoff; chat model calls with their token usage, tool calls with their arguments, results and errors,
and agent actions go through the same mapping as the OTLP ingest (``producers.otel.genai``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any, Iterable

from langchain_core.callbacks import BaseCallbackHandler

from agentlog.producers.adapters.handed import Handed
from agentlog.producers.otel.genai import Kind, Point, Timeline, as_json, name_of, subject_of_run
from agentlog.producers.otel.prices import Prices, default_prices
from agentlog.producers.sync import SyncEventLog

log = logging.getLogger(__name__)
_NOT_AGENTS = frozenset({"__start__", "__end__"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return ""


class AgentlogCallbackHandler(BaseCallbackHandler):
    """``log``: a SyncEventLog of one's own (default: one from the settings, closed by ``close``)."""

    raise_error = False

    def __init__(self, log: SyncEventLog | None = None, *, agents: Iterable[str] | None = None,
                 tenant_id: str = "default", prices: Prices | None = None) -> None:
        self.log = log or SyncEventLog()
        self._owns = log is None
        self.agents = set(agents) if agents is not None else None
        self.tenant_id = tenant_id
        self.prices = prices or default_prices()
        self._lock = threading.RLock()
        self._roots: dict[uuid.UUID, uuid.UUID] = {}
        """Each run's root run."""
        self._timelines: dict[uuid.UUID, Timeline] = {}
        self._started: dict[uuid.UUID, tuple[int, dict[str, Any]]] = {}
        self._handed = Handed()

    # -- plumbing ----------------------------------------------------------------------------------------

    def _root(self, run_id: uuid.UUID, parent_run_id: uuid.UUID | None) -> uuid.UUID:
        root = self._roots.get(parent_run_id, parent_run_id) if parent_run_id is not None else run_id
        self._roots[run_id] = root
        return root

    def _feed(self, run_id: uuid.UUID, points: list[Point]) -> None:
        timeline = self._timelines.get(self._roots.get(run_id, run_id))
        if timeline is None:
            return
        for item in timeline.feed(points):
            self._handed.add(self.log.submit(item.event))

    def _point(self, kind: Kind, run_id: uuid.UUID, at: int, agent: str | None = None, **data: Any) -> Point:
        root = self._roots.get(run_id, run_id)
        return Point(kind, at, str(root), str(run_id), agent, data)

    def _is_agent(self, node: str) -> bool:
        if node in _NOT_AGENTS:
            return False
        return node in self.agents if self.agents is not None else "tool" not in node.lower()

    def flush(self) -> None:
        """Wait until every event handed over is durable."""
        self._handed.wait()

    def close(self) -> None:
        self.flush()
        if self._owns:
            self.log.close()

    # -- chains: the root run, LangGraph's nodes ---------------------------------------------------------

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: uuid.UUID,
                       parent_run_id: uuid.UUID | None = None, metadata: dict[str, Any] | None = None,
                       **kwargs: Any) -> None:
        with self._lock:
            root = self._root(run_id, parent_run_id)
            metadata = metadata or {}
            if parent_run_id is None:
                conversation = name_of(metadata.get("conversation_id") or metadata.get("thread_id")) \
                    or f"run-{run_id}"
                self._timelines[root] = Timeline(conversation, tenant_id=self.tenant_id,
                                                 subject_id=subject_of_run(metadata))
            node = metadata.get("langgraph_node")
            if isinstance(node, str) and self._is_agent(node) and kwargs.get("name") == node:
                self._feed(run_id, [self._point(Kind.AGENT_START, run_id, time.time_ns(), name_of(node),
                                                user_message=None)])

    def on_chain_end(self, outputs: Any, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None,
                     **kwargs: Any) -> None:
        if parent_run_id is None:
            with self._lock:
                self._feed(run_id, [self._point(Kind.ROOT_END, run_id, time.time_ns())])
                self._forget(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None,
                       **kwargs: Any) -> None:
        with self._lock:
            if parent_run_id is None:
                self._feed(run_id, [self._point(Kind.ERROR, run_id, time.time_ns(), error_type=type(error).__name__,
                                                message=str(error), tool_call_id=None),
                                    self._point(Kind.ROOT_END, run_id, time.time_ns())])
                self._forget(run_id)

    def _forget(self, root: uuid.UUID) -> None:
        self._timelines.pop(root, None)
        for run in [r for r, top in self._roots.items() if top == root]:
            self._roots.pop(run, None)
            self._started.pop(run, None)

    # -- chat models -------------------------------------------------------------------------------------

    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: list[list[Any]], *,
                            run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **kwargs: Any) -> None:
        users = [_text(m.content) for batch in messages for m in batch if getattr(m, "type", "") == "human"]
        model = (kwargs.get("invocation_params") or {}).get("model") or (kwargs.get("invocation_params") or {}).get(
            "model_name") or (serialized or {}).get("name")
        with self._lock:
            self._root(run_id, parent_run_id)
            self._started[run_id] = (time.time_ns(), {"user_message": users[-1] if users else None, "model": model})

    def on_llm_end(self, response: Any, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None,
                   **kwargs: Any) -> None:
        end = time.time_ns()
        with self._lock:
            start, seen = self._started.pop(run_id, (end, {}))
            message = None
            for generations in getattr(response, "generations", []) or []:
                for generation in generations:
                    message = getattr(generation, "message", None) or message
            usage = getattr(message, "usage_metadata", None) or {}
            meta = getattr(message, "response_metadata", None) or {}
            model = name_of(meta.get("model_name") or meta.get("model") or seen.get("model")) or "unknown"
            tokens_in, tokens_out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
            text = _text(getattr(message, "content", "")) if not getattr(message, "tool_calls", None) else ""
            self._feed(run_id, [self._point(
                Kind.LLM, run_id, start, model=model, input_tokens=tokens_in, output_tokens=tokens_out,
                latency_ms=(end - start) / 1e6, cost_usd=self.prices.cost(model, tokens_in, tokens_out), end_ns=end,
                user_message=seen.get("user_message"), text=text or None)])

    # -- tools -------------------------------------------------------------------------------------------

    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *, run_id: uuid.UUID,
                      parent_run_id: uuid.UUID | None = None, inputs: dict[str, Any] | None = None,
                      **kwargs: Any) -> None:
        with self._lock:
            self._root(run_id, parent_run_id)
            name = name_of((serialized or {}).get("name") or kwargs.get("name")) or "tool"
            arguments = json.dumps(inputs, default=str) if inputs is not None else as_json(input_str)
            self._started[run_id] = (time.time_ns(), {"tool": name, "arguments": arguments,
                                                      "call_id": name_of(kwargs.get("tool_call_id")) or str(run_id)})

    def on_tool_end(self, output: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        content = getattr(output, "content", output)
        self._tool_done(run_id, as_json(content if isinstance(content, str) else _text(content) or str(content)),
                        None)

    def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._tool_done(run_id, json.dumps({"error": str(error)}), error)

    def _tool_done(self, run_id: uuid.UUID, result: str, error: BaseException | None) -> None:
        end = time.time_ns()
        with self._lock:
            start, seen = self._started.pop(run_id, (end, {"tool": "tool", "arguments": "null",
                                                           "call_id": str(run_id)}))
            points = [self._point(Kind.TOOL, run_id, start, tool=seen["tool"], call_id=seen["call_id"],
                                  arguments=seen["arguments"], result=result, status="error" if error else "ok",
                                  duration_ms=(end - start) / 1e6, end_ns=end)]
            if error is not None:
                points.append(self._point(Kind.ERROR, run_id, end, error_type=type(error).__name__,
                                          message=str(error), tool_call_id=seen["call_id"]))
            self._feed(run_id, points)
