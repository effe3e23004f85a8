"""How far each projection is behind the end of the log, per partition."""

from __future__ import annotations

from typing import Mapping

from agentlog.consumers.runtime import group_for
from agentlog.deploy import kafka
from agentlog.deploy.settings import Settings
from agentlog.projections.base import Positions


def watermarks(settings: Settings, topic: str | None = None) -> dict[int, tuple[int, int]]:
    """Per partition of the topic, its (low, high) offsets: where the log begins and ends now."""
    return kafka.watermarks(settings, topic or settings.events_topic)


def log_size(settings: Settings, topic: str | None = None) -> int:
    """How many messages the topic holds now (what a projector starting from the beginning will read)."""
    return sum(high - low for low, high in watermarks(settings, topic).values())


def lag(settings: Settings, names: list[str], topic: str | None = None,
        stored: Mapping[str, Positions | None] | None = None) -> dict[str, dict[int, int]]:
    """Per projection, per partition: messages between where it stands and the end of the log.

    Where it stands: ``stored[name]``, the store's own positions, when given;
    else its consumer group's committed offsets (stale after a rebuild until the projector commits).
    """
    topic = topic or settings.events_topic
    ends = watermarks(settings, topic)
    result: dict[str, dict[int, int]] = {}
    for name in names:
        own = (stored or {}).get(name)
        if own is not None:
            result[name] = {p: high - own.next_offset(p, low) for p, (low, high) in ends.items()}
            continue
        committed = kafka.committed(settings, group_for(name, topic), topic, ends)
        result[name] = {p: high - (committed[p] if committed.get(p, -1) >= 0 else low)
                        for p, (low, high) in ends.items()}
    return result
