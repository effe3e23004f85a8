"""What-if re-runs: an agent run again on a fork of a recorded run, its tools answered from the recording.

``rerun(log, source, at=N, agent=fn)`` forks ``source`` at step N (``Conversation.fork``) and calls ``fn`` with a
``Rerun``: the fork to record into (the current conversation while ``fn`` runs), the source's steps 1..N
(``history``; ``agentlog.projections.fold.fold`` gives the state they make), and ``tool(name)``, an async
callable to hand the agent's framework in place of the real tool. A call whose tool name and input the source
recorded after step N is answered from the recording, in the order recorded (an error recorded is raised
again as ``RecordedToolError``), with no side effect and no cost; any other goes to the real tool (``tools``),
or raises ``NotRecorded`` in strict mode. Every call is recorded in the fork as the ``@tool`` wrapper records
one. The run's figures: ``answered`` (from the recording), ``called`` (real tools).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from agentlog.producers.errors import ProducerError
from agentlog.producers.event_log import EventLog
from agentlog.producers.history import events_from_kafka
from agentlog.producers.recorder import Conversation
from agentlog.schemas.events import Event, EventType

Tool = Callable[..., Awaitable[Any]]


class NotRecorded(ProducerError):
    """A tool call the source did not record after the fork's step, in strict mode (or with no real tool)."""


class RecordedToolError(Exception):
    """The recorded call failed: raised again, with what the recording said, for the agent to handle."""


def _key(tool: str, arguments: Any) -> str:
    return f"{tool}\x00{json.dumps(arguments, sort_keys=True, default=str)}"


def _input(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def recordings(events: list[Event], *, after: int) -> dict[str, list[tuple[str, str]]]:
    """The source's tool calls after step ``after``: by tool name and input, each call's (status, output) in
    order; a call that ended in an error_occurred with no result is ("error", its message)."""
    calls: dict[str, tuple[int, str]] = {}
    outcomes: dict[str, tuple[str, str]] = {}
    for e in sorted(events, key=lambda e: e.sequence_number):
        if e.sequence_number <= after:
            continue
        p = e.payload
        if e.event_type == EventType.TOOL_CALLED:
            calls[p["tool_call_id"]] = (e.sequence_number, _key(p["tool_name"], _input(p["input_json"])))
        elif e.event_type == EventType.TOOL_RESULT and p.get("tool_call_id") in calls:
            outcomes[p["tool_call_id"]] = (p["status"], p["output_json"])
        elif e.event_type == EventType.ERROR_OCCURRED and p.get("tool_call_id") in calls:
            outcomes.setdefault(p["tool_call_id"], ("error", p["message"]))
    found: dict[str, list[tuple[str, str]]] = {}
    for call_id, (_, key) in sorted(calls.items(), key=lambda item: item[1][0]):
        if call_id in outcomes:
            found.setdefault(key, []).append(outcomes[call_id])
    return found


@dataclass
class Rerun:
    fork: Conversation
    history: list[Event]
    recorded: dict[str, list[tuple[str, str]]]
    tools: Mapping[str, Tool] = field(default_factory=dict)
    strict: bool = False
    answered: int = 0
    """Calls answered from the recording."""
    called: int = 0
    """Calls that went to a real tool."""
    answer: Any = None
    """What the agent function returned."""

    def tool(self, name: str, real: Tool | None = None) -> Tool:
        """``name`` as the agent should call it (keyword arguments, as its input was recorded)."""
        async def call(**arguments: Any) -> Any:
            call_id = uuid.uuid4().hex[:12]
            await self.fork.tool_called(name, arguments, tool_call_id=call_id)
            queue = self.recorded.get(_key(name, arguments))
            if queue:
                status, output = queue.pop(0)
                self.answered += 1
                if status == "error":
                    await self.fork.error("RecordedToolError", output, tool_call_id=call_id)
                    raise RecordedToolError(output)
                value = _input(output)
                await self.fork.tool_result(name, value, tool_call_id=call_id, duration_ms=0.0)
                return value if isinstance(value, str) else output
            tool = real or self.tools.get(name)
            if self.strict or tool is None:
                why = "strict mode" if self.strict else "no real tool was given for it"
                await self.fork.error("NotRecorded", f"{name} with this input was not recorded ({why})",
                                      tool_call_id=call_id)
                raise NotRecorded(f"tool {name} with input {json.dumps(arguments, default=str)[:200]} was not "
                                  f"recorded after step {self.fork.next_sequence} of the source ({why})")
            self.called += 1
            started = time.perf_counter()
            try:
                value = await tool(**arguments)
            except Exception as exc:
                await self.fork.error(type(exc).__name__, str(exc) or repr(exc), tool_call_id=call_id)
                raise
            await self.fork.tool_result(name, value, tool_call_id=call_id,
                                        duration_ms=(time.perf_counter() - started) * 1000)
            return value
        return call


async def rerun(log: EventLog, source: str, *, at: int, agent: Callable[[Rerun], Awaitable[Any]],
                tools: Mapping[str, Tool] | None = None, strict: bool = False,
                conversation_id: str | None = None) -> Rerun:
    """Fork ``source`` at step ``at`` and run ``agent`` on the fork (see the module); returns the Rerun, its
    answer and figures once the agent returned."""
    events = await asyncio.to_thread(events_from_kafka, log.settings, source, topic=log.topic)
    fork = await Conversation.fork_from(log, source, events, at=at, conversation_id=conversation_id)
    run = Rerun(fork, [e for e in events if e.sequence_number <= at], recordings(events, after=at), tools or {},
                strict)
    async with fork:
        run.answer = await agent(run)
    return run
