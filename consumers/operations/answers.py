"""The JSON text of an answer, the same from the command line and the web API."""

from __future__ import annotations

import json
from typing import Any


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def dumps(value: Any, *, indent: int | None = None) -> str:
    """JSON text of an answer: datetimes in ISO 8601, anything else JSON lacks as its text."""
    return json.dumps(value, indent=indent, default=_plain)
