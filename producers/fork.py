"""Forks: a new conversation whose first events are another's, up to a step, each a new event of its own.

As a workflow reset does: the history up to a point copied into a new run, which goes on from there. The
copies keep each step's type, agent, payload, time and subject, take a new event id, chain their causation
among themselves, and name their source (``forked_from_conversation``, ``forked_from_sequence``: schema v5).
The source is read from the log itself, its text opened as a projector opens it: a conversation whose subject
was forgotten is copied with ``[erased]`` text, never the words. The fork keeps the source's subject, so
forgetting the subject erases its forks too.
"""

from __future__ import annotations

import uuid

from agentlog.schemas.errors import AgentlogError
from agentlog.schemas.events import CONTROL, Event


class ForkRefused(AgentlogError):
    """A fork that cannot be made (an unknown source, a step it does not have, an id in use): nothing is written."""


def new_id() -> str:
    return f"conv-{uuid.uuid4().hex[:16]}"


def copies(source: str, events: list[Event], *, at: int, conversation_id: str) -> list[Event]:
    """The fork's first ``at`` events: copies of the source's steps 1..``at`` (``events``: the source's, from the
    log, in any order; the first of a step in log order is the step). ForkRefused when it has no such steps."""
    steps: dict[int, Event] = {}
    for event in events:
        if event.event_type not in CONTROL:
            steps.setdefault(event.sequence_number, event)
    if not steps:
        raise ForkRefused(f"no conversation {source!r} in the log: nothing to fork (`agentlog search '*'` lists "
                          "some)")
    last = max(steps)
    if type(at) is not int or not 1 <= at <= last:
        raise ForkRefused(f"conversation {source!r} has steps 1 to {last}: fork it at one of those, not {at!r}")
    missing = [n for n in range(1, at + 1) if n not in steps]
    if missing:
        raise ForkRefused(f"conversation {source!r} lacks step {missing[0]} in the log: fork it before that step")
    if conversation_id == source:
        raise ForkRefused(f"a fork needs an id of its own, not its source's ({source!r})")
    made: list[Event] = []
    for n in range(1, at + 1):
        e = steps[n]
        made.append(Event(
            conversation_id=conversation_id, sequence_number=n, event_type=e.event_type, agent_name=e.agent_name,
            payload=dict(e.payload), occurred_at=e.occurred_at, tenant_id=e.tenant_id,
            correlation_id=conversation_id, causation_id=made[-1].event_id if made else None,
            attributes=e.attributes, subject_id=e.subject_id, forked_from_conversation=source,
            forked_from_sequence=at))
    return made
