"""``agentlog forget``: crypto-shredding a subject's (or one conversation's) text, in the log and in every store.

1. The data keys of the subject's conversations (or of the one conversation) are deleted from the key
   store: what they sealed in ``agent.events`` can never be read again, by anyone, in any rebuild.
2. A ``subject_forgotten`` event is appended to each of those conversations (in its own partition, so
   after everything it holds). It names who asked and the keys deleted, and carries no personal data.
3. Each projection, as it applies that event, erases the conversation's text in its store: the dashboard's
   archive and views, the search documents, ClickHouse's payload column. Counts, tokens, costs, names
   and statuses stay.
4. ``forget`` waits until every store has applied the events (or ``wait`` passes) and says, store by
   store, how many of the conversations and of their records it erased.

A conversation written with encryption off has no key: its text is in the log in the clear. ``forget``
still erases it from the stores, and says that a rebuild would bring it back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from agentlog.deploy.keys import KeyStore
from agentlog.deploy.settings import Settings
from agentlog.producers import EventLog
from agentlog.producers.event_log import Durability
from agentlog.projections.base.store import Store
from agentlog.projections.registry import STORES
from agentlog.schemas.errors import AgentlogError
from agentlog.schemas.events import Event, EventType


class NothingToForget(AgentlogError):
    """No conversation of that subject (or that conversation) is known to the key store or the log."""


@dataclass
class Erased:
    store: str
    applied: bool
    """Whether the store applied the forgetting within the wait (it will when its projector runs)."""
    conversations: int = 0
    records: int = 0
    """Of the forgotten conversations, those the store holds, and their records (events, documents, rows)."""
    unreachable: str | None = None
    """Why the store's positions could not be read, the last time they were asked for."""

    def as_json(self) -> dict[str, Any]:
        return {"store": self.store, "applied": self.applied, "conversations": self.conversations,
                "records": self.records, "unreachable": self.unreachable}


@dataclass
class Forgetting:
    subject_id: str | None
    conversations: list[str]
    key_ids: list[str]
    deleted: int = 0
    """Keys this run deleted (a run again after one the broker stopped finds them deleted already)."""
    in_clear: list[str] = field(default_factory=list)
    """Conversations that had no key: their text is in the log in the clear, and a rebuild brings it back."""
    stores: list[Erased] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"subject_id": self.subject_id, "conversations": self.conversations, "keys_deleted": self.deleted,
                "in_clear": self.in_clear, "stores": [s.as_json() for s in self.stores]}


def forget(settings: Settings, *, subject: str | None = None, conversation: str | None = None,
           requested_by: str, wait: float = 60.0, waiting: Callable[[str], None] = lambda store: None) -> Forgetting:
    """Delete the keys, append the forgettings, wait for the stores, and say what each erased."""
    if (subject is None) == (conversation is None):
        raise AgentlogError("name one of --subject ID or --conversation ID")
    keys = KeyStore(settings)
    try:
        gone = keys.delete(subject_id=subject, conversation_id=conversation)
    finally:
        keys.close()
    conversations = gone.conversations or ([conversation] if conversation is not None else [])
    if not conversations:
        raise NothingToForget(f"subject {subject!r}: the key store holds no conversation of it (was it given as "
                              "subject_id when its events were written?); it is noted as forgotten, so a key bound "
                              "to it later is deleted")
    done = Forgetting(subject, conversations, gone.key_ids, gone.deleted,
                      in_clear=[] if gone.conversations else list(conversations))
    positions = asyncio.run(_announce(settings, subject, conversations, gone.key_ids, requested_by))
    deadline = time.monotonic() + wait
    for each in STORES:
        waiting(each.name)
        applied, unreachable = _wait_applied(settings, each, positions, deadline)
        held, records = each.held(settings, conversations) if applied else (0, 0)
        done.stores.append(Erased(each.name, applied, held, records, unreachable))
    return done


async def _announce(settings: Settings, subject: str | None, conversations: list[str], key_ids: list[str],
                    requested_by: str) -> dict[int, int]:
    """One subject_forgotten per conversation, acknowledged by the broker; per partition, the offset past the
    last of them."""
    ends: dict[int, int] = {}
    async with EventLog(settings, durability=Durability.BROKER) as log:
        receipts = await asyncio.gather(*(log.append(Event(
            conversation_id=cid, sequence_number=1, event_type=EventType.SUBJECT_FORGOTTEN, agent_name="agentlog",
            payload={"subject_id": subject, "requested_by": requested_by, "key_ids": key_ids},
            subject_id=subject)) for cid in conversations))
    for receipt in receipts:
        if receipt.position is not None:
            ends[receipt.position.partition] = max(ends.get(receipt.position.partition, 0),
                                                   receipt.position.offset + 1)
    return ends


def _wait_applied(settings: Settings, each: Store, ends: dict[int, int], deadline: float) -> tuple[bool, str | None]:
    """Whether the store applied the forgettings by the deadline; and why it could not be asked, if so."""
    while True:
        unreachable = None
        try:
            stored = each.positions(settings, settings.events_topic)
        except AgentlogError as exc:  # a store that is away has not applied it yet; it will, and forget says so
            stored, unreachable = {}, str(exc)
        if all(stored.get(p, 0) >= end for p, end in ends.items()):
            return True, None
        if time.monotonic() > deadline:
            return False, unreachable
        time.sleep(0.2)
