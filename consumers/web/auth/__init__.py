"""Who may do what: users, roles and API tokens for the dashboard, its API, Prometheus and the ingest."""

from agentlog.consumers.web.auth.roles import Permission, Principal, Role
from agentlog.consumers.web.auth.store import AuthStore, BadCredentials, UnknownName, expiry

__all__ = ["AuthStore", "BadCredentials", "Permission", "Principal", "Role", "UnknownName", "expiry"]
