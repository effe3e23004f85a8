"""A conversation's state, folded from its events — what a replay shows, and what the read models keep.

The same fold serves ``agentlog replay`` and the dashboard projection, so the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

import orjson

from agentlog.projections.base import digest as digests
from agentlog.schemas.events import SAGA_PREFIX, ConversationStatus, Event, EventType, SagaStatus
from agentlog.schemas.saga import SagaState
from agentlog.schemas.sealing import ERASED


def _json(text: str) -> Any:
    """A tool's JSON input or output, read as the rule of what an event may be reads it (orjson)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


@dataclass
class ConversationState:
    conversation_id: str
    active_agent: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The user's message and the agents' responses, in order."""
    tools_called: list[dict[str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    final_response: str | None = None
    status: ConversationStatus = ConversationStatus.ACTIVE
    errors: list[dict[str, Any]] = field(default_factory=list)
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    sagas: dict[str, SagaState] = field(default_factory=dict)
    started_at: datetime | None = None
    last_event_at: datetime | None = None
    completed_at: datetime | None = None
    last_sequence: int = 0
    tool_count: int = 0
    handoff_count: int = 0
    error_count: int = 0
    guardrail_count: int = 0
    event_count: int = 0
    last_tool: str | None = None
    user_message: str | None = None
    tenant_id: str | None = None
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    agents: list[str] = field(default_factory=list)
    digest: str = digests.EMPTY
    """Of the events applied, in order (``projections.base.digest``): what ``agentlog verify`` compares."""
    forked_from_conversation: str | None = None
    forked_from_sequence: int | None = None
    """Where a fork came from: the conversation, and its last step the fork copied (from the first event)."""

    @property
    def saga_status(self) -> SagaStatus | None:
        """The most recent saga's status; one that needs a person wins over everything."""
        if not self.sagas:
            return None
        if any(s.status == SagaStatus.NEEDS_INTERVENTION for s in self.sagas.values()):
            return SagaStatus.NEEDS_INTERVENTION
        return list(self.sagas.values())[-1].status

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return int((self.completed_at - self.started_at).total_seconds() * 1000)

    def apply(self, event: Event) -> None:
        """Fold one event in: the envelope's bookkeeping, then the step of its type (``_STEPS``). A forgetting
        erases what is there and is not counted."""
        if event.event_type == EventType.SUBJECT_FORGOTTEN:
            self.erase()
            return
        self.last_sequence = event.sequence_number
        self.digest = digests.chain(self.digest, event.sequence_number, event.event_id)
        self.last_event_at = event.occurred_at
        self.event_count += 1
        self.tenant_id = event.tenant_id
        if event.forked_from_conversation is not None and self.forked_from_conversation is None:
            self.forked_from_conversation = event.forked_from_conversation
            self.forked_from_sequence = event.forked_from_sequence
        if event.agent_name and event.agent_name not in self.agents:
            self.agents.append(event.agent_name)
        if event.event_type.value.startswith(SAGA_PREFIX):
            self._apply_saga(event)
        else:
            _STEPS[event.event_type](self, event.payload, event)

    def erase(self) -> None:
        """What ``agentlog forget`` leaves: every text erased; counts, tokens, costs, names and statuses kept."""
        if self.user_message is not None:
            self.user_message = ERASED
        if self.final_response is not None:
            self.final_response = ERASED
        for records, names in ((self.messages, ("text",)), (self.tools_called, ("input", "output", "input_text", "output_text")),
                               (self.handoffs, ("reason",)), (self.errors, ("message",)),
                               (self.guardrails, ("detail",))):
            for record in records:
                for name in names:
                    if name in record:
                        record[name] = ERASED
        for saga in self.sagas.values():
            if saga.error is not None:
                saga.error = ERASED

    def _started(self, p: Mapping[str, Any], event: Event) -> None:
        self.active_agent = event.agent_name
        self.started_at = event.occurred_at
        self.user_message = p["user_message"]
        self.messages.append({"role": "user", "agent": event.agent_name, "text": p["user_message"]})
        self.status = ConversationStatus.ACTIVE

    def _tool_called(self, p: Mapping[str, Any], event: Event) -> None:
        self.tool_count += 1
        self.last_tool = p["tool_name"]
        self.tools_called.append({"tool": p["tool_name"], "input": _json(p["input_json"]),
                                  "tool_call_id": p["tool_call_id"], "agent": event.agent_name})

    def _tool_result(self, p: Mapping[str, Any], event: Event) -> None:
        for call in reversed(self.tools_called):
            if call["tool_call_id"] == p["tool_call_id"]:
                call.update(output=_json(p["output_json"]), status=p["status"], duration_ms=p["duration_ms"])
                break

    def _handoff(self, p: Mapping[str, Any], event: Event) -> None:
        self.handoff_count += 1
        self.handoffs.append({"from_agent": p["from_agent"], "to_agent": p["to_agent"], "reason": p["reason"]})
        self.active_agent = p["to_agent"]
        if p["to_agent"] not in self.agents:
            self.agents.append(p["to_agent"])

    def _response(self, p: Mapping[str, Any], event: Event) -> None:
        self.final_response = p["response"]
        self.messages.append({"role": "agent", "agent": event.agent_name, "text": p["response"]})
        self._finish(ConversationStatus.COMPLETED, event)

    def _error(self, p: Mapping[str, Any], event: Event) -> None:
        self.error_count += 1
        self.errors.append({"error_type": p["error_type"], "message": p["message"], "agent": event.agent_name})
        if not p["retryable"]:
            self._finish(ConversationStatus.FAILED, event)

    def _guardrail(self, p: Mapping[str, Any], event: Event) -> None:
        self.guardrail_count += 1
        self.guardrails.append({"guardrail": p["guardrail"], "action": p["action"], "detail": p["detail"]})
        if p["action"] == "blocked":
            self._finish(ConversationStatus.BLOCKED, event)

    def _llm_called(self, p: Mapping[str, Any], event: Event) -> None:
        self.llm_calls += 1
        self.input_tokens += p["input_tokens"]
        self.output_tokens += p["output_tokens"]
        self.cost_usd += p["cost_usd"]

    def _finish(self, status: ConversationStatus, event: Event) -> None:
        self.status = status
        self.completed_at = event.occurred_at

    def _apply_saga(self, event: Event) -> None:
        """The saga's own fold (``SagaState``), then what the saga's end means for the conversation."""
        kind, saga_id = event.event_type, event.payload["saga_id"]
        if kind == EventType.SAGA_STARTED:
            self.sagas[saga_id] = SagaState(saga_id)
            self.status = ConversationStatus.ACTIVE
        saga = self.sagas.get(saga_id)
        if saga is None:
            return
        saga.apply(event)
        if kind == EventType.SAGA_COMPENSATION_FAILED:
            self._finish(ConversationStatus.NEEDS_INTERVENTION, event)
        elif kind == EventType.SAGA_ROLLED_BACK and saga.status == SagaStatus.ROLLED_BACK:
            self._finish(ConversationStatus.ROLLED_BACK, event)

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready but for the datetimes; ``from_dict`` reads it back."""
        data = {name: getattr(self, name) for name in _FIELDS}  # dataclasses.asdict deep-copies: a third of search's time
        for name in _RECORDS:
            data[name] = [dict(item) for item in data[name]]
        data["agents"] = list(self.agents)
        data["sagas"] = [s.summary() for s in self.sagas.values()]
        data["saga_status"] = self.saga_status
        data["duration_ms"] = self.duration_ms
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConversationState":
        """A state to go on folding from, as ``as_dict`` (or a stored row or document) gave it.

        Datetimes may come as ISO strings (from a search document). Lists a store does
        not keep come back empty; the counters carry on.
        """
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in names and v is not None}
        for key in ("started_at", "last_event_at", "completed_at"):
            if isinstance(values.get(key), str):
                values[key] = datetime.fromisoformat(values[key])
        if "status" in values:
            values["status"] = ConversationStatus(values["status"])
        values["sagas"] = {s["saga_id"]: SagaState.from_summary(s) for s in data.get("sagas") or []}
        return cls(**values)


_FIELDS = tuple(f.name for f in fields(ConversationState))
_RECORDS = ("messages", "tools_called", "handoffs", "errors", "guardrails")
"""The fields that are lists of records: ``as_dict`` copies each record, so a caller may change its copy."""

_STEPS: dict[EventType, Callable[[ConversationState, Mapping[str, Any], Event], None]] = {
    EventType.CONVERSATION_STARTED: ConversationState._started,
    EventType.TOOL_CALLED: ConversationState._tool_called,
    EventType.TOOL_RESULT: ConversationState._tool_result,
    EventType.HANDOFF_INITIATED: ConversationState._handoff,
    EventType.RESPONSE_GENERATED: ConversationState._response,
    EventType.ERROR_OCCURRED: ConversationState._error,
    EventType.GUARDRAIL_TRIGGERED: ConversationState._guardrail,
    EventType.LLM_CALLED: ConversationState._llm_called,
}
"""How each event type (but the saga's, folded by ``_apply_saga``) changes the state."""


def fold(conversation_id: str, events: Iterable[Event]) -> ConversationState:
    state = ConversationState(conversation_id)
    for event in sorted(events, key=lambda e: e.sequence_number):
        state.apply(event)
    return state
