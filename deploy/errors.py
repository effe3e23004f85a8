"""Errors of the local stack."""

from __future__ import annotations

from agentlog.schemas.errors import AgentlogError


class StackError(AgentlogError):
    """A service of the local stack could not be provisioned, started or stopped."""


class ServiceUnreachable(StackError):
    """Nothing answers at a service's configured address."""

    def __init__(self, service: str, address: str, hint: str = "run `agentlog stack up`") -> None:
        super().__init__(f"{service}: nothing answers at {address}; {hint}")
        self.service = service
        self.address = address
