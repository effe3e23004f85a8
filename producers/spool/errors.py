"""Errors of the spool."""

from __future__ import annotations

from agentlog.producers.errors import ProducerError


class SpoolUnusable(ProducerError):
    """The spool directory cannot be used (not writable, or writable by other users)."""


class SpoolFull(ProducerError):
    """The spool reached its size limit: the event is neither acknowledged nor spooled."""
