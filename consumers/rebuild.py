"""Rebuilding a read model from the beginning of the log while the old one keeps serving, then swapping.

Each store owns its new version and its swap (``projections/*/rebuild.py``): a new Postgres schema moved
into the live one in one transaction, a new index swapped behind the alias in one request, a new
ClickHouse database exchanged table by table. A live projector then finds the store's positions behind
or ahead of its own and follows them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from agentlog.consumers.runtime import Projector
from agentlog.deploy import kafka
from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.projections.analytics import AnalyticsProjection
from agentlog.projections.registry import rebuild_target

log = logging.getLogger(__name__)


@dataclass
class Rebuilt:
    name: str
    events: int
    seconds: float
    replaced: str


def rebuild(settings: Settings, name: str, *, topic: str | None = None,
            analytics: AnalyticsProjection | None = None, stop: threading.Event | None = None,
            watch: Callable[[Projector], None] = lambda projector: None) -> Rebuilt:
    """The store makes a new version of itself; the log goes into it; the store swaps it in; the rebuild's
    consumer group is deleted. ``watch`` is handed the projector before it runs (a progress bar reads its
    ``stats``); ``analytics``, this process's projection when it holds the embedded store."""
    started = time.monotonic()
    tag = time.strftime("%Y%m%d%H%M%S")
    group = f"agentlog.{name}.rebuild.{tag}"
    target = rebuild_target(name, settings, tag, **({"live": analytics} if name == "analytics" else {}))
    projector = Projector(target.projection, settings, topic=topic, group_id=group)
    watch(projector)
    stats = projector.run(stop=stop, until_caught_up=True)
    replaced = target.swap()
    _forget_group(settings, group)
    return Rebuilt(name, stats.events, time.monotonic() - started, replaced)


def _forget_group(settings: Settings, group: str) -> None:
    """The rebuild's consumer group, deleted once it is done: the live projector carries on from the store."""
    admin = kafka.admin(settings)
    try:
        kafka.retrying(settings, lambda: [f.result(timeout=30) for f in admin.delete_consumer_groups(
            [group], request_timeout=30).values()], what=f"deleting the rebuild's group {group}")
    except StackError as exc:  # the rebuild itself is done: say it, do not undo it
        log.warning("rebuild: could not delete consumer group %s: %s", group, exc)
