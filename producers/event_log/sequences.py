"""The sequence rule on the append path: per conversation, numbers start at 1 and only go up.

The last number handed over is remembered for the newest conversations (at most ``TRACKED``); a number
handed over whose append failed before the broker took it may be sent again.
"""

from __future__ import annotations

from collections import OrderedDict

from agentlog.producers.errors import SequenceError
from agentlog.schemas.events import Event

TRACKED = 100_000
"""Conversations whose last sequence number is remembered (the least recently appended are forgotten)."""


class Sequences:
    def __init__(self) -> None:
        self._last: OrderedDict[str, int] = OrderedDict()

    def check(self, event: Event) -> None:
        """SequenceError unless the event's number follows the last one handed over for its conversation."""
        last = self._last.get(event.conversation_id)
        if last is not None and event.sequence_number <= last:
            raise SequenceError(f"conversation {event.conversation_id}: sequence number {event.sequence_number} "
                                f"goes backwards (last appended: {last})")
        if event.sequence_number < 1:
            raise SequenceError(f"conversation {event.conversation_id}: sequence numbers start at 1, "
                                f"got {event.sequence_number}")
        if last is not None:
            self._last.move_to_end(event.conversation_id)
        if len(self._last) > TRACKED:
            self._last.popitem(last=False)

    def check_batch(self, events: list[Event]) -> dict[str, int]:
        """The rule over a batch, before any of it is sent: per conversation, the batch's last number."""
        last: dict[str, int] = {}
        for event in events:
            cid, number = event.conversation_id, event.sequence_number
            before = last.get(cid)
            if before is None:
                self.check(event)
            elif type(number) is not int or number <= before:
                raise SequenceError(f"conversation {cid}: sequence number {number} goes backwards (the batch "
                                    f"has {before} before it)")
            last[cid] = number
        return last

    def handed(self, event: Event) -> None:
        """One event was handed over."""
        self._last[event.conversation_id] = event.sequence_number

    def handed_batch(self, last: dict[str, int]) -> None:
        """A batch was handed over: the last number of each of its conversations."""
        for cid, number in last.items():
            self._last[cid] = number
            self._last.move_to_end(cid)
        while len(self._last) > TRACKED:
            self._last.popitem(last=False)

    def not_taken(self, event: Event) -> None:
        """The event's append failed before the broker took it: its number may be sent again."""
        if self._last.get(event.conversation_id) == event.sequence_number:
            self._last[event.conversation_id] = event.sequence_number - 1
