"""What a writer's appends came to, by events and by conversations: acknowledged, spooled, failed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from agentlog.producers.event_log import AppendsFailed, Receipts

OUTCOMES = ("acknowledged", "spooled", "failed")


@dataclass
class Outcomes:
    events: Counter[str] = field(default_factory=Counter)
    conversations: dict[str, set[str]] = field(default_factory=lambda: {o: set() for o in OUTCOMES})
    errors: Counter[str] = field(default_factory=Counter)

    def add_batch(self, conversation_id: str, outcome: Receipts | BaseException, size: int) -> None:
        """What an ``append_many`` of ``size`` events of one conversation came to."""
        if isinstance(outcome, AppendsFailed):
            for _, error in outcome.failed:
                self.errors[str(error)] += 1
            counts = {"acknowledged": outcome.receipts.acknowledged, "spooled": outcome.receipts.spooled,
                      "failed": len(outcome.failed)}
        elif isinstance(outcome, Receipts):
            counts = {"acknowledged": outcome.acknowledged, "spooled": outcome.spooled}
        else:
            self.errors[str(outcome)] += 1
            counts = {"failed": size}
        self.merge(counts, conversation_id)

    def merge(self, counts: Mapping[str, int], conversation_id: str) -> None:
        """An EventLog's ``counts`` for the appends of one conversation."""
        for kind in OUTCOMES:
            if counts.get(kind):
                self.events[kind] += counts[kind]
                self.conversations[kind].add(conversation_id)

    @property
    def failed(self) -> int:
        return self.events["failed"]

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {kind: {"events": self.events[kind], "conversations": len(self.conversations[kind])}
                       for kind in OUTCOMES}
        found["failed"]["errors"] = dict(self.errors.most_common(5))
        return found

    def sentence(self) -> str:
        """"500 events of 60 conversations acknowledged by the broker; 88 of 12 spooled, ...": every outcome
        that happened, by counts."""
        parts = []
        for kind, said in (("acknowledged", "acknowledged by the broker"),
                           ("spooled", "spooled (sent on when the broker answers: `agentlog spool status`)"),
                           ("failed", "failed")):
            if self.events[kind]:
                parts.append(f"{self.events[kind]:,} event(s) of {len(self.conversations[kind]):,} conversation(s) "
                             f"{said}")
        if self.errors:
            message, times = self.errors.most_common(1)[0]
            others = len(self.errors) - 1
            parts[-1] += f": {message}" + (f" ({times} times)" if times > 1 else "") + (
                f", and {others} other error(s)" if others else "")
        return "; ".join(parts) or "nothing appended"
