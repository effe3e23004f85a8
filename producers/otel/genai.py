"""GenAI spans to agentlog events: one place that says which span becomes which event.

A span (``Span``, whatever carried it: OTLP, or a framework's own tracing) is first read into ``Point``s —
what happened, when, by which agent, with which data — by ``points``, which knows the attribute names of
OpenTelemetry's GenAI conventions, their older names, OpenLLMetry's and OpenInference's. A ``Timeline``
then turns one conversation's points, in time order, into events with gapless sequence numbers; its
``State`` (the next number, the current agent, whether the conversation started) is all it needs to go on
later, so it can be stored and resumed.

| span | events |
|---|---|
| the first point of a conversation | conversation_started (the first user message seen, the agent) |
| ``invoke_agent`` / AGENT, agent changes | handoff_initiated (from the current agent to the new one) |
| ``invoke_agent`` / AGENT output | response_generated |
| ``execute_tool`` / TOOL | tool_called + tool_result (arguments, result, duration, status) |
| a handoff span (the Agents SDK's) | handoff_initiated |
| ``chat`` / ``text_completion`` / ``generate_content`` / LLM | llm_called (model, tokens, latency, cost) |
| a guardrail span that triggered | guardrail_triggered |
| status error / ``error.type`` / an ``exception`` event | error_occurred |
| the root span's end, when the last model text got no response yet | response_generated |

Attributes no field takes are kept on the span's first event (``Event.attributes``).

The conversation's subject (whose personal data it carries: what ``agentlog forget --subject`` names) is
the first one a point names (``Span.subject``: the OTLP ingest takes it from the span's or the resource's
``user.id`` or ``enduser.id``; an adapter from the run's metadata); it is on every event made from then on.
A conversation has one subject: a later point naming another does not change it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Iterable, Iterator, Mapping

from agentlog.producers.otel.prices import Prices, default_prices
from agentlog.schemas.events import Event, EventType
from agentlog.schemas.rules import MAX_ATTRIBUTE, MAX_ATTRIBUTES, MAX_NAME, InvalidEvent, check_event

NAMESPACE = uuid.UUID("6f1c2a4e-8d3b-5e7f-9a10-2b3c4d5e6f70")
"""Event ids of ingested spans are uuid5 under this namespace: the same span gives the same ids."""
UNKNOWN_AGENT = "agent"


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Span:
    """One finished span, as any source gives it (ids in lower-case hex)."""

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    parent_span_id: str = ""
    events: tuple[SpanEvent, ...] = ()
    error: str | None = None
    """The status message when the status is ERROR (the empty string for an error with no message)."""
    service: str = ""
    """The resource's ``service.name``."""
    subject: str | None = None
    """Whose personal data the span carries (see the module)."""

    @property
    def is_root(self) -> bool:
        return not self.parent_span_id


class Kind(StrEnum):
    AGENT_START = "agent_start"
    AGENT_END = "agent_end"
    TOOL = "tool"
    HANDOFF = "handoff"
    LLM = "llm"
    GUARDRAIL = "guardrail"
    ERROR = "error"
    ROOT_END = "root_end"


_RANK = {Kind.AGENT_START: 0, Kind.HANDOFF: 1, Kind.LLM: 1, Kind.TOOL: 1, Kind.GUARDRAIL: 1, Kind.ERROR: 2,
         Kind.AGENT_END: 3, Kind.ROOT_END: 4}


@dataclass(frozen=True, slots=True)
class Point:
    """Something that happened: ``kind`` at ``at_ns``, in span ``span_id`` of trace ``trace_id``."""

    kind: Kind
    at_ns: int
    trace_id: str
    span_id: str
    agent: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    subject: str | None = None

    def key(self) -> tuple[int, int, str]:
        return self.at_ns, _RANK[self.kind], self.span_id


# -- reading a span ----------------------------------------------------------------------------------------

CONVERSATION = ("gen_ai.conversation.id", "session.id", "traceloop.association.properties.session_id")
AGENT = ("gen_ai.agent.name", "agent.name")
OPERATION = "gen_ai.operation.name"
TOOL_NAME = ("gen_ai.tool.name", "tool.name")
TOOL_CALL_ID = ("gen_ai.tool.call.id", "tool_call.id", "tool.call.id")
TOOL_ARGUMENTS = ("gen_ai.tool.call.arguments", "input.value", "traceloop.entity.input")
TOOL_RESULT = ("gen_ai.tool.call.result", "output.value", "traceloop.entity.output")
MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "llm.response.model",
         "llm.request.model")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
                "llm.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion",
                 "llm.usage.completion_tokens")
CONSUMED_PREFIXES = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.prompt.", "gen_ai.completion.",
                     "llm.input_messages.", "llm.output_messages.", "gen_ai.system_instructions")
CONSUMED = frozenset({*CONVERSATION, *AGENT, OPERATION, *TOOL_NAME, *TOOL_CALL_ID, *TOOL_ARGUMENTS, *TOOL_RESULT,
                      *MODEL, *INPUT_TOKENS, *OUTPUT_TOKENS, "openinference.span.kind", "traceloop.span.kind",
                      "traceloop.entity.name", "llm.request.type", "error.type", "input.mime_type",
                      "output.mime_type", "gen_ai.guardrail.name", "gen_ai.guardrail.triggered",
                      "llm.token_count.total", "llm.usage.total_tokens", "user.id", "enduser.id"})


def _first(attributes: Mapping[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        value = attributes.get(name)
        if value is not None and value != "":
            return value
    return None


def name_of(value: Any) -> str | None:
    """A value fit for an id or a name (agentlog's rule: 1 to 256 characters, no NUL), or None."""
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    if not text:
        return None
    return text[:MAX_NAME]


def _count(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(number, 0), 2**40)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text.replace("\x00", "")


_NOT_JSON = object()


def as_json(value: Any) -> str:
    """A JSON text for a tool's arguments or result: the value itself when it already is valid JSON."""
    if value is None:
        return "null"
    if isinstance(value, str):
        if _loads(value, _NOT_JSON) is _NOT_JSON:
            return json.dumps(value.replace("\x00", ""), ensure_ascii=False)
        return value if "\x00" not in value else json.dumps(value.replace("\x00", ""), ensure_ascii=False)
    return json.dumps(value, default=str, ensure_ascii=False)


def conversation_of(span: Span) -> str | None:
    """The conversation a span names itself (``gen_ai.conversation.id`` or its equivalents), if any."""
    return name_of(_first(span.attributes, CONVERSATION))


SUBJECT = ("user.id", "enduser.id")
"""Where a span names its subject, by default (the older ``enduser.id`` second)."""


def subject_of(*sources: Mapping[str, Any], names: Iterable[str] = SUBJECT) -> str | None:
    """The first of ``names`` found in the first source that has one (a span's attributes, then its
    resource's), fit for an id; None when none names a subject."""
    for attributes in sources:
        found = name_of(_first(attributes, names))
        if found is not None:
            return found
    return None


RUN_SUBJECT = ("subject_id", "user_id")
"""Where a framework run's metadata names its subject (the Agents SDK's trace metadata, LangChain's)."""


def subject_of_run(metadata: Any) -> str | None:
    """The subject a run's metadata names, if it is a mapping that names one."""
    return subject_of(metadata, names=RUN_SUBJECT) if isinstance(metadata, Mapping) else None


def conversation_of_trace(trace_id: str) -> str:
    return f"trace-{trace_id}"


def _classify(span: Span) -> Kind | None:
    attributes = span.attributes
    operation = str(attributes.get(OPERATION) or "").lower()
    inference = str(attributes.get("openinference.span.kind") or "").upper()
    traceloop = str(attributes.get("traceloop.span.kind") or "").lower()
    if operation == "invoke_agent" or inference == "AGENT" or traceloop == "agent":
        return Kind.AGENT_START
    if operation == "execute_tool" or inference == "TOOL" or traceloop == "tool":
        if _first(attributes, TOOL_NAME) is None and span.name.lower().startswith("handoff"):
            return Kind.HANDOFF
        return Kind.TOOL
    if operation in ("chat", "text_completion", "generate_content", "completion") or inference == "LLM" \
            or "llm.request.type" in attributes:
        return Kind.LLM
    if inference == "GUARDRAIL" or operation == "guardrail" or "gen_ai.guardrail.name" in attributes:
        return Kind.GUARDRAIL
    if operation == "handoff":
        return Kind.HANDOFF
    return None


def _messages(attributes: Mapping[str, Any], side: str) -> list[tuple[str, str]]:
    """(role, text) of the messages on one side (``input`` or ``output``), whichever convention holds them."""
    found: list[tuple[str, str]] = []
    structured = attributes.get(f"gen_ai.{side}.messages")
    if isinstance(structured, str):
        structured = _loads(structured, None)
    if isinstance(structured, list):
        for message in structured:
            if isinstance(message, dict):
                found.append((str(message.get("role") or ""), _parts_text(message)))
        return found
    prefix = {"input": ("llm.input_messages.", "gen_ai.prompt."),
              "output": ("llm.output_messages.", "gen_ai.completion.")}[side]
    indexed: dict[int, dict[str, str]] = {}
    for name, value in attributes.items():
        for start in prefix:
            if name.startswith(start):
                index, _, rest = name[len(start):].partition(".")
                if index.isdigit():
                    rest = rest.removeprefix("message.")
                    indexed.setdefault(int(index), {})[rest] = value if isinstance(value, str) else _text(value)
    for position in sorted(indexed):
        entry = indexed[position]
        found.append((entry.get("role", ""), entry.get("content", "")))
    return found


def _loads(text: str, otherwise: Any) -> Any:
    """What a JSON text holds, or ``otherwise`` when it is not JSON (or nests deeper than Python reads)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return otherwise


def _parts_text(message: Mapping[str, Any]) -> str:
    parts = message.get("parts")
    if isinstance(parts, list):
        return "".join(str(p.get("content", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text")
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _event_messages(span: Span, names: tuple[str, ...]) -> list[str]:
    texts = []
    for event in span.events:
        if event.name in names:
            value = event.attributes.get("content") or event.attributes.get("message")
            if isinstance(value, str):
                loaded = _loads(value, value)
                if isinstance(loaded, dict):
                    loaded = loaded.get("content", "")
                texts.append(_text(loaded))
    return texts


def _user_message(span: Span) -> str | None:
    users = [text for role, text in _messages(span.attributes, "input") if role == "user" and text]
    users += _event_messages(span, ("gen_ai.user.message",))
    if users:
        return users[-1]
    value = span.attributes.get("input.value") or span.attributes.get("traceloop.entity.input")
    if isinstance(value, str) and value and str(span.attributes.get("input.mime_type", "")) != "application/json":
        return value
    return None


def _model_text(span: Span) -> str | None:
    texts = [text for role, text in _messages(span.attributes, "output") if role in ("assistant", "") and text]
    texts += _event_messages(span, ("gen_ai.choice", "gen_ai.assistant.message"))
    return texts[-1] if texts else None


def _agent_output(span: Span) -> str | None:
    text = _model_text(span)
    if text:
        return text
    value = span.attributes.get("output.value") or span.attributes.get("traceloop.entity.output")
    return value if isinstance(value, str) and value else None


def _error(span: Span) -> tuple[str, str] | None:
    kind = span.attributes.get("error.type")
    message = span.error
    for event in span.events:
        if event.name == "exception":
            kind = kind or event.attributes.get("exception.type")
            message = message or event.attributes.get("exception.message")
    if kind is None and message is None:
        return None
    return name_of(kind) or "error", _text(message or "")


def _kept(span: Span) -> dict[str, str]:
    """The span's attributes that no field takes, as text (JSON for what is not text), within the rule."""
    kept: dict[str, str] = {}
    for name, value in span.attributes.items():
        if name in CONSUMED or name.startswith(CONSUMED_PREFIXES):
            continue
        if len(kept) >= MAX_ATTRIBUTES - 1:
            kept["agentlog.attributes_dropped"] = "true"
            break
        key = name_of(name)
        if key is None:
            continue
        text = _text(value)
        if len(text.encode("utf-8", "surrogatepass")) > MAX_ATTRIBUTE:
            text = text.encode("utf-8", "surrogatepass")[:MAX_ATTRIBUTE - 16].decode("utf-8", "ignore")
        kept[key] = text
    return kept


Found = list[tuple[Kind, int, dict[str, Any]]]


def _agent_points(span: Span, prices: Prices) -> Found:
    found: Found = [(Kind.AGENT_START, span.start_ns, {"user_message": _user_message(span)})]
    output = _agent_output(span)
    if output:
        found.append((Kind.AGENT_END, span.end_ns, {"response": output}))
    return found


def _tool_points(span: Span, prices: Prices) -> Found:
    attributes = span.attributes
    tool = name_of(_first(attributes, TOOL_NAME)) or name_of(span.name.removeprefix("execute_tool ")) or "tool"
    error = _error(span)
    result = _first(attributes, TOOL_RESULT)
    call_id = name_of(_first(attributes, TOOL_CALL_ID)) or span.span_id
    found: Found = [(Kind.TOOL, span.start_ns, {
        "tool": tool, "call_id": call_id, "arguments": as_json(_first(attributes, TOOL_ARGUMENTS)),
        "result": as_json(result if result is not None or error is None else {"error": error[1]}),
        "status": "error" if error else "ok", "duration_ms": _duration_ms(span), "end_ns": span.end_ns})]
    if error is not None:
        found.append((Kind.ERROR, span.end_ns, {"error_type": error[0], "message": error[1], "tool_call_id": call_id}))
    return found


def _handoff_points(span: Span, prices: Prices) -> Found:
    attributes = span.attributes
    to_agent = name_of(attributes.get("output.value")) or name_of(span.name.removeprefix("handoff to "))
    return [(Kind.HANDOFF, span.start_ns, {"from_agent": name_of(attributes.get("input.value")), "to_agent": to_agent})]


def _llm_points(span: Span, prices: Prices) -> Found:
    attributes = span.attributes
    model = name_of(_first(attributes, MODEL)) or "unknown"
    tokens_in, tokens_out = _count(_first(attributes, INPUT_TOKENS)), _count(_first(attributes, OUTPUT_TOKENS))
    return [(Kind.LLM, span.start_ns, {
        "model": model, "input_tokens": tokens_in, "output_tokens": tokens_out, "latency_ms": _duration_ms(span),
        "cost_usd": prices.cost(model, tokens_in, tokens_out), "end_ns": span.end_ns,
        "user_message": _user_message(span), "text": _model_text(span)})]


def _guardrail_points(span: Span, prices: Prices) -> Found:
    attributes = span.attributes
    triggered = attributes.get("gen_ai.guardrail.triggered")
    if not (triggered is True or str(triggered).lower() == "true"):
        return []
    return [(Kind.GUARDRAIL, span.end_ns, {
        "guardrail": name_of(attributes.get("gen_ai.guardrail.name")) or name_of(span.name) or "guardrail",
        "detail": _text(attributes.get("output.value") or "")})]


_READERS = {Kind.AGENT_START: _agent_points, Kind.TOOL: _tool_points, Kind.HANDOFF: _handoff_points,
            Kind.LLM: _llm_points, Kind.GUARDRAIL: _guardrail_points}


def _duration_ms(span: Span) -> float:
    return max(span.end_ns - span.start_ns, 0) / 1e6


def points(span: Span, prices: Prices | None = None) -> list[Point]:
    """What one span says happened (none for a span that is no GenAI operation and no error)."""
    attributes = span.attributes
    kind = _classify(span)
    agent = name_of(_first(attributes, AGENT))
    if kind is Kind.AGENT_START and agent is None:
        agent = name_of(attributes.get("traceloop.entity.name")) if attributes.get("traceloop.span.kind") == "agent" \
            else None
        if agent is None:  # an agent span that names no agent (a framework's root): only its end and errors count
            kind = None
    found = _READERS[kind](span, prices or default_prices()) if kind is not None else []
    if kind is not Kind.TOOL and not (kind is Kind.GUARDRAIL and found):
        error = _error(span)
        if error is not None:
            found.append((Kind.ERROR, span.end_ns, {"error_type": error[0], "message": error[1], "tool_call_id": None}))
    if span.is_root:
        found.append((Kind.ROOT_END, span.end_ns, {}))
    kept = _kept(span)
    return [Point(k, at, span.trace_id, span.span_id, agent, data, kept if i == 0 else {}, span.subject)
            for i, (k, at, data) in enumerate(found)]


# -- a conversation's timeline ------------------------------------------------------------------------------


@dataclass
class State:
    """Where a conversation stands for the timeline: all it needs to go on."""

    next_sequence: int = 1
    agent: str | None = None
    started: bool = False
    pending: str | None = None
    """The last text a model produced that no response_generated has said yet."""
    pending_agent: str | None = None
    """An agent that began before anything else happened (the start waits for the first user message)."""
    subject: str | None = None
    """The conversation's subject, once a point named one (see the module)."""

    def to_json(self) -> dict[str, Any]:
        return {"next_sequence": self.next_sequence, "agent": self.agent, "started": self.started,
                "pending": self.pending, "pending_agent": self.pending_agent, "subject": self.subject}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "State":
        return cls(int(data.get("next_sequence", 1)), data.get("agent"), bool(data.get("started")),
                   data.get("pending"), data.get("pending_agent"), data.get("subject"))


@dataclass(frozen=True, slots=True)
class Made:
    """An event the timeline made, and the span it came from (its trace context)."""

    event: Event
    trace_id: str
    span_id: str


class Timeline:
    """One conversation's events, in the order of its points (``feed`` sorts each lot it is given)."""

    def __init__(self, conversation_id: str, state: State | None = None, *, tenant_id: str = "default",
                 default_agent: str = UNKNOWN_AGENT, subject_id: str | None = None) -> None:
        self.conversation_id = conversation_id
        self.state = state or State()
        self.tenant_id = tenant_id
        self.default_agent = default_agent
        if self.state.subject is None:
            self.state.subject = name_of(subject_id)

    def feed(self, found: Iterable[Point]) -> list[Made]:
        made: list[Made] = []
        for point in sorted(found, key=Point.key):
            made.extend(self._point(point))
        return made

    def finish(self, trace_id: str, span_id: str, at_ns: int) -> list[Made]:
        """The end of a run no root span closes (an adapter's trace end)."""
        return self.feed([Point(Kind.ROOT_END, at_ns, trace_id, span_id)])

    def _point(self, point: Point) -> Iterator[Made]:
        state = self.state
        if state.subject is None and point.subject is not None:
            state.subject = point.subject  # from here on; a later, other subject does not change it
        maker = _Maker(self, point)
        if point.kind is Kind.AGENT_START:
            if not state.started:
                state.pending_agent = point.agent
                if point.data.get("user_message"):
                    yield self._start(maker, point.data["user_message"])
                return
            if point.agent and point.agent != state.agent:
                yield maker.make(EventType.HANDOFF_INITIATED, {"from_agent": state.agent or self.default_agent,
                                                               "to_agent": point.agent, "reason": ""})
                state.agent = point.agent
            return
        if point.kind is Kind.ROOT_END and not state.started:
            return
        if not state.started:
            yield self._start(maker, point.data.get("user_message") or "")
        yield from getattr(self, f"_{point.kind.value}")(maker, point.data)

    def _tool(self, maker: "_Maker", data: Mapping[str, Any]) -> Iterator[Made]:
        yield maker.make(EventType.TOOL_CALLED, {"tool_call_id": data["call_id"], "tool_name": data["tool"],
                                                 "input_json": data["arguments"]}, own_agent=True)
        yield maker.make(EventType.TOOL_RESULT, {
            "tool_call_id": data["call_id"], "tool_name": data["tool"], "output_json": data["result"],
            "status": data["status"], "duration_ms": data["duration_ms"]}, at_ns=data["end_ns"], own_agent=True)

    def _llm(self, maker: "_Maker", data: Mapping[str, Any]) -> Iterator[Made]:
        yield maker.make(EventType.LLM_CALLED, {
            "model": data["model"], "input_tokens": data["input_tokens"], "output_tokens": data["output_tokens"],
            "latency_ms": data["latency_ms"], "cost_usd": data["cost_usd"]}, at_ns=data["end_ns"], own_agent=True)
        if data.get("text"):
            self.state.pending = data["text"]

    def _handoff(self, maker: "_Maker", data: Mapping[str, Any]) -> Iterator[Made]:
        to_agent = data.get("to_agent")
        if to_agent and to_agent != self.state.agent:
            yield maker.make(EventType.HANDOFF_INITIATED, {
                "from_agent": data.get("from_agent") or self.state.agent or self.default_agent, "to_agent": to_agent,
                "reason": ""})
            self.state.agent = to_agent

    def _guardrail(self, maker: "_Maker", data: Mapping[str, Any]) -> Iterator[Made]:
        yield maker.make(EventType.GUARDRAIL_TRIGGERED, {"guardrail": data["guardrail"], "action": "blocked",
                                                         "detail": data["detail"]})

    def _error(self, maker: "_Maker", data: Mapping[str, Any]) -> Iterator[Made]:
        yield maker.make(EventType.ERROR_OCCURRED, {
            "error_type": data["error_type"], "message": data["message"], "tool_call_id": data.get("tool_call_id"),
            "retryable": data.get("tool_call_id") is not None})

    def _agent_end(self, maker: "_Maker", data: Mapping[str, Any]) -> Iterator[Made]:
        yield maker.make(EventType.RESPONSE_GENERATED, {"response": data["response"]}, own_agent=True)
        self.state.pending = None

    def _root_end(self, maker: "_Maker", data: Mapping[str, Any]) -> Iterator[Made]:
        if self.state.pending:
            yield maker.make(EventType.RESPONSE_GENERATED, {"response": self.state.pending}, tag="response")
            self.state.pending = None

    def _start(self, maker: "_Maker", user_message: str) -> Made:
        state = self.state
        state.agent = state.pending_agent or maker.point.agent or self.default_agent
        state.pending_agent = None
        state.started = True
        return maker.make(EventType.CONVERSATION_STARTED, {"user_message": user_message, "channel": "otel"},
                          tag="started")


class _Maker:
    """Makes one point's events: the conversation's next numbers, ids derived from the span."""

    def __init__(self, timeline: Timeline, point: Point) -> None:
        self.timeline = timeline
        self.point = point
        self.index = 0
        self.attributes_given = False

    def make(self, event_type: EventType, payload: dict[str, Any], *, at_ns: int | None = None,
             own_agent: bool = False, tag: str = "") -> Made:
        point, timeline, state = self.point, self.timeline, self.timeline.state
        self.index += 1
        agent = (point.agent if own_agent else None) or state.agent or timeline.default_agent
        event = Event(conversation_id=timeline.conversation_id, sequence_number=state.next_sequence,
                      event_type=event_type, agent_name=agent, payload=payload,
                      event_id=str(uuid.uuid5(NAMESPACE, f"{point.trace_id}/{point.span_id}/{point.kind}/"
                                                         f"{tag or self.index}")),
                      occurred_at=_at(point.at_ns if at_ns is None else at_ns), tenant_id=timeline.tenant_id,
                      correlation_id=point.trace_id, causation_id=point.span_id,
                      attributes=self._attributes(tag), subject_id=state.subject)
        try:
            check_event(event)
        except InvalidEvent as exc:  # what no store would take (JSON nested too deep, say) keeps its number
            event = replace(event, event_type=EventType.ERROR_OCCURRED, attributes={}, payload={
                "error_type": "unmappable_span", "message": f"agentlog could not keep this span's event: {exc}"[:2000],
                "tool_call_id": None, "retryable": False})
        state.next_sequence += 1
        return Made(event, point.trace_id, point.span_id)

    def _attributes(self, tag: str) -> Mapping[str, str]:
        """The span's own attributes go on its first event (not on a conversation_started that a span of another
        kind led to)."""
        if self.attributes_given or (tag == "started" and self.point.kind is not Kind.AGENT_START):
            return {}
        self.attributes_given = True
        return self.point.attributes


def _at(nanoseconds: int) -> datetime:
    return datetime.fromtimestamp(nanoseconds / 1e9, UTC)
