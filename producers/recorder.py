"""The conversation recorder: typed helpers that append a conversation's events in order.

Sequence numbers are gapless: a number is taken only when the event is durable (acknowledged by
the broker, or in the spool that sends it on), or may still reach the log (the error says
``taken``), and one conversation's appends happen one after another.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
import uuid
from typing import Any

from agentlog.producers.errors import NotSerializable, ProducerError, SubjectConflict
from agentlog.producers.event_log import Durability, EventLog, Receipt
from agentlog.producers.fork import ForkRefused, copies, new_id
from agentlog.producers.history import events_from_kafka
from agentlog.schemas.events import Event, EventType
from agentlog.schemas.rules import MAX_NAME, InvalidEvent

current: contextvars.ContextVar["Conversation"] = contextvars.ContextVar("agentlog_conversation")


def to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_iso, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise NotSerializable(f"{what} is not JSON-serialisable: {exc}") from exc


def _iso(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class Conversation:
    """Records one conversation. ``async with Conversation(log, agent="triage-agent") as conv:``
    makes it the current conversation, which tools wrapped with ``@tool`` record into.

    ``subject_id`` names whose personal data the conversation carries (what ``agentlog forget --subject``
    erases); every event recorded carries it. One not known at the start is named with ``identify`` when it
    is: from then on, and the conversation's key takes it, so forgetting the subject erases the whole
    conversation. A conversation has one subject: naming another raises SubjectConflict.
    """

    def __init__(self, log: EventLog, *, agent: str, conversation_id: str | None = None, tenant_id: str = "default",
                 correlation_id: str | None = None, next_sequence: int = 1, subject_id: str | None = None) -> None:
        self.log = log
        self.agent = agent
        self.conversation_id = conversation_id or f"conv-{uuid.uuid4().hex[:16]}"
        self.subject_id: str | None = None
        if subject_id is not None:
            self.identify(subject_id)
        self.tenant_id = tenant_id
        self.correlation_id = correlation_id or self.conversation_id
        self.next_sequence = next_sequence
        self.last_event_id: str | None = None
        self.last_receipt: Receipt | None = None
        """How the last event recorded became durable (acknowledged by the broker, or spooled)."""
        self._lock = asyncio.Lock()
        self._token: contextvars.Token[Conversation] | None = None

    @classmethod
    async def fork(cls, log: EventLog, source: str, *, at: int, conversation_id: str | None = None,
                   agent: str | None = None) -> "Conversation":
        """A new conversation whose steps 1..``at`` are copies of ``source``'s (``producers.fork``), appended and
        durable; the conversation returned records from step ``at`` + 1 on, as ``agent`` (the last copied
        step's agent unless given). ForkRefused, with nothing written, for an unknown source, a step it does not
        have, or an id already in the log."""
        events = await asyncio.to_thread(events_from_kafka, log.settings, source, topic=log.topic)
        return await cls.fork_from(log, source, events, at=at, conversation_id=conversation_id, agent=agent)

    @classmethod
    async def fork_from(cls, log: EventLog, source: str, events: list[Event], *, at: int,
                        conversation_id: str | None = None, agent: str | None = None) -> "Conversation":
        """``fork`` of the source's ``events`` as already read from the log (``producers.history``)."""
        new = conversation_id or new_id()
        made = copies(source, events, at=at, conversation_id=new)
        taken = await asyncio.to_thread(events_from_kafka, log.settings, new, topic=log.topic) \
            if conversation_id is not None else []
        if taken:
            raise ForkRefused(f"conversation {new!r} is in the log already: choose another id for the fork")
        await log.append_many(made)
        conversation = cls(log, agent=agent or made[-1].agent_name, conversation_id=new,
                           tenant_id=made[0].tenant_id, next_sequence=at + 1, subject_id=made[0].subject_id)
        conversation.last_event_id = made[-1].event_id
        return conversation

    async def __aenter__(self) -> "Conversation":
        self._token = current.set(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            current.reset(self._token)
            self._token = None

    async def record(self, event_type: EventType, payload: dict[str, Any], *, agent: str | None = None,
                     causation_id: str | None = None, durability: Durability | str | None = None) -> Event:
        """Append one event with the next sequence number; returns it once it is durable (``durability``:
        the EventLog's unless given)."""
        async with self._lock:
            event = self.build(event_type, payload, agent=agent, causation_id=causation_id)
            try:
                self.last_receipt = await self.log.append(event, durability=durability)
            except ProducerError as exc:
                if exc.taken:  # it may still reach the log: what follows goes after it
                    self._taken(event)
                raise
            self._taken(event)
            return event

    def identify(self, subject_id: str) -> None:
        """Name the conversation's subject, for every event recorded from now on (see the class)."""
        if not isinstance(subject_id, str) or not subject_id.strip() or len(subject_id) > MAX_NAME \
                or "\x00" in subject_id:
            raise InvalidEvent(f"conversation {self.conversation_id}: a subject id is 1 to {MAX_NAME} characters "
                               f"of text with no NUL, got {subject_id!r:.80}")
        if self.subject_id is not None and self.subject_id != subject_id:
            raise SubjectConflict(f"conversation {self.conversation_id} carries the personal data of subject "
                                  f"{self.subject_id!r}; it cannot name {subject_id!r:.80} too: record that person's "
                                  "in a conversation of its own")
        self.subject_id = subject_id

    def _taken(self, event: Event) -> None:
        self.next_sequence = event.sequence_number + 1
        self.last_event_id = event.event_id

    def build(self, event_type: EventType, payload: dict[str, Any], *, agent: str | None = None,
              causation_id: str | None = None) -> Event:
        return Event(conversation_id=self.conversation_id, sequence_number=self.next_sequence,
                     event_type=event_type, agent_name=agent or self.agent, payload=payload,
                     tenant_id=self.tenant_id, correlation_id=self.correlation_id,
                     causation_id=causation_id or self.last_event_id, subject_id=self.subject_id)

    async def started(self, user_message: str, *, channel: str | None = None) -> Event:
        return await self.record(EventType.CONVERSATION_STARTED, {"user_message": user_message, "channel": channel})

    async def tool_called(self, tool: str, arguments: Any, *, tool_call_id: str | None = None) -> Event:
        return await self.record(EventType.TOOL_CALLED, {
            "tool_call_id": tool_call_id or uuid.uuid4().hex[:12], "tool_name": tool,
            "input_json": to_json(arguments, f"input of tool {tool}")})

    async def tool_result(self, tool: str, output: Any, *, tool_call_id: str, status: str = "ok",
                          duration_ms: float | None = None) -> Event:
        return await self.record(EventType.TOOL_RESULT, {
            "tool_call_id": tool_call_id, "tool_name": tool, "output_json": to_json(output, f"output of tool {tool}"),
            "status": status, "duration_ms": duration_ms})

    async def handoff(self, to_agent: str, reason: str) -> Event:
        event = await self.record(EventType.HANDOFF_INITIATED,
                                  {"from_agent": self.agent, "to_agent": to_agent, "reason": reason})
        self.agent = to_agent
        return event

    async def response(self, text: str) -> Event:
        return await self.record(EventType.RESPONSE_GENERATED, {"response": text})

    async def error(self, error_type: str, message: str, *, tool_call_id: str | None = None,
                    retryable: bool = False) -> Event:
        return await self.record(EventType.ERROR_OCCURRED, {
            "error_type": error_type, "message": message, "tool_call_id": tool_call_id, "retryable": retryable})

    async def guardrail(self, guardrail: str, action: str, detail: str = "") -> Event:
        return await self.record(EventType.GUARDRAIL_TRIGGERED,
                                 {"guardrail": guardrail, "action": action, "detail": detail})

    async def llm_called(self, model: str, *, input_tokens: int, output_tokens: int, latency_ms: float,
                         cost_usd: float) -> Event:
        return await self.record(EventType.LLM_CALLED, {
            "model": model, "input_tokens": input_tokens, "output_tokens": output_tokens,
            "latency_ms": float(latency_ms), "cost_usd": float(cost_usd)})

    def call(self, tool: str, arguments: Any = None) -> "ToolCall":
        """Record an inline tool call: ``async with conv.call("lookup_order", args) as call: call.output = ...``"""
        return ToolCall(self, tool, arguments)

    def position(self) -> int:
        """The sequence number of the last event recorded (0 before the first)."""
        return self.next_sequence - 1


class ToolCall:
    """One tool call: tool_called on entry; tool_result with output and duration on a clean exit, or
    error_occurred with the exception (which goes on) when the block raises."""

    def __init__(self, conversation: Conversation, tool: str, arguments: Any) -> None:
        self.conversation = conversation
        self.tool = tool
        self.arguments = arguments
        self.tool_call_id = uuid.uuid4().hex[:12]
        self.output: Any = None
        self._started = 0.0

    async def __aenter__(self) -> "ToolCall":
        await self.conversation.tool_called(self.tool, self.arguments, tool_call_id=self.tool_call_id)
        self._started = time.perf_counter()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        duration_ms = (time.perf_counter() - self._started) * 1000
        if exc is None:
            await self.conversation.tool_result(self.tool, self.output, tool_call_id=self.tool_call_id,
                                                duration_ms=duration_ms)
        elif isinstance(exc, Exception):
            await self.conversation.error(type(exc).__name__, str(exc) or repr(exc), tool_call_id=self.tool_call_id)

