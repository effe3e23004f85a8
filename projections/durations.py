"""A look back as users write it (``30m``, ``24h``, ``7d``), for the dashboard's and the search's filters."""

from __future__ import annotations

import re

from agentlog.schemas.errors import AgentlogError

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_SPAN = 100 * 365 * 86400
"""The longest look back a duration may ask for: a hundred years."""


def duration(since: str, *, option: str = "--since") -> tuple[int, str]:
    """``24h`` as (24, "h"); AgentlogError, naming ``option``, for anything that is not a duration of at most a
    hundred years."""
    match = _DURATION.match(since.strip()) if len(since) < 40 else None
    if not match:
        raise AgentlogError(f"{option} {since[:40]!r}: use a duration like 30m, 24h or 7d")
    amount, unit = int(match.group(1)), match.group(2)
    if amount * _SECONDS[unit] > MAX_SPAN:
        raise AgentlogError(f"{option} {since!r}: at most a hundred years ({MAX_SPAN // 86400}d)")
    return amount, unit
