"""Errors of sagas."""

from __future__ import annotations

from agentlog.schemas.errors import AgentlogError


class SagaError(AgentlogError):
    """A saga could not be run."""


class SagaDefinitionError(SagaError):
    """A saga is defined wrongly; raised before anything runs."""


class SagaBusy(SagaError):
    """Another orchestrator holds the saga's lease."""
