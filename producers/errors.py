"""Errors of the write side."""

from __future__ import annotations

from agentlog.schemas.errors import AgentlogError


class ProducerError(AgentlogError):
    """An event could not be appended to the log.

    ``taken``: the event may still reach the log (it is spooled, or still queued for the broker), so
    its sequence number is used: the conversation goes on after it, never with a second event of it.
    """

    def __init__(self, message: str, *, taken: bool = False) -> None:
        super().__init__(message)
        self.taken = taken


class BrokerUnavailable(ProducerError):
    """The broker did not acknowledge an event within the configured timeout."""


class EventTooLarge(ProducerError):
    """An event is larger than the broker accepts."""


class SequenceError(ProducerError):
    """A sequence number that is not the next one of its conversation."""


class NotSerializable(ProducerError):
    """A tool input or output that cannot be written as JSON."""


class LogClosed(ProducerError):
    """append() after close()."""


class SubjectConflict(ProducerError, ValueError):
    """A conversation asked to name a second subject: one conversation has one subject (whose personal data
    it carries, what ``agentlog forget --subject`` erases), so another person's is a new conversation."""
