"""The roles a user or a token has, and what each may do (least privilege: no role sees more than its job)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Permission(StrEnum):
    CONVERSATIONS = "conversations"
    """Search conversations, read one, replay it."""
    DASHBOARD = "dashboard"
    """The operator's overview: counters, the agents' figures, lag, projector health."""
    ANALYTICS = "analytics"
    """The analytics pages, their charts and the SQL box."""
    PROMETHEUS = "prometheus"
    """The processes' own metrics (/metrics)."""
    INGEST = "ingest"
    """Send events (the OTLP ingest)."""
    USERS = "users"
    """Add and remove users and tokens."""
    DOCS = "docs"
    """The API's own description (/api/docs)."""


class Role(StrEnum):
    SUPPORT = "support"
    ANALYST = "analyst"
    OPERATOR = "operator"
    AGENT = "agent"
    ADMIN = "admin"


_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.SUPPORT: frozenset({Permission.CONVERSATIONS, Permission.DOCS}),
    Role.ANALYST: frozenset({Permission.ANALYTICS, Permission.DOCS}),
    Role.OPERATOR: frozenset({Permission.DASHBOARD, Permission.CONVERSATIONS, Permission.PROMETHEUS,
                              Permission.DOCS}),
    Role.AGENT: frozenset({Permission.INGEST}),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a user (through a session) or a token, and its role."""

    name: str
    role: Role
    kind: str
    """``user`` or ``token``."""

    def may(self, permission: Permission) -> bool:
        return permission in _PERMISSIONS[self.role]
