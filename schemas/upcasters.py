"""Upcasters: one small function per version step, for what Avro schema resolution cannot express.

Resolution already renames fields through aliases and fills defaults; an upcaster
runs after it, on the record as the current reader schema shapes it.
"""

from __future__ import annotations

import json
from typing import Any, Callable

Record = dict[str, Any]


def v1_to_v2(record: Record) -> Record:
    """tool_result v1 had no ``status``: resolution fills "ok", but a v1 result whose output
    carried an ``"error"`` key was a failure, so its status is "error"."""
    name, payload = record["payload"]
    if record["event_type"] == "tool_result":
        try:
            output = json.loads(payload["output_json"])
        except ValueError:
            output = None
        if isinstance(output, dict) and output.get("error") is not None:
            record["payload"] = (name, {**payload, "status": "error"})
    return record


def v2_to_v3(record: Record) -> Record:
    """v3 only added ``attributes``, which resolution fills (empty)."""
    return record


def v3_to_v4(record: Record) -> Record:
    """v4 added ``subject_id``, ``key_id`` and ``sealed`` (resolution fills them: null) and a payload type."""
    return record


def v4_to_v5(record: Record) -> Record:
    """v5 added ``forked_from_conversation`` and ``forked_from_sequence`` (resolution fills them: null)."""
    return record


UPCASTERS: dict[int, Callable[[Record], Record]] = {1: v1_to_v2, 2: v2_to_v3, 3: v3_to_v4, 4: v4_to_v5}
"""``UPCASTERS[n]`` turns a record written with version n (already resolved) into version n + 1."""
