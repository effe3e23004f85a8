"""Rebuilding a read model from the beginning of the log while the old one keeps serving, then swapping.

Each store owns its new version and its swap (its ``Store.rebuild``): a new Postgres schema moved
into the live one in one transaction, a new index swapped behind the alias in one request, a new
ClickHouse database exchanged table by table. A live projector then finds the store's positions behind
or ahead of its own and follows them.

Before the swap the new version is verified against the log up to the end it was rebuilt to
(``consumers.operations.verify``): on any difference it is dropped, the old version goes on serving and
``RebuildRefused`` says why in one line. ``force`` swaps anyway, and says so in the log.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from agentlog.consumers.operations.verify import check
from agentlog.consumers.runtime import Projector
from agentlog.deploy import kafka
from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.projections.registry import rebuild_target
from agentlog.schemas.errors import AgentlogError

log = logging.getLogger(__name__)


class RebuildRefused(AgentlogError):
    """The new version differs from the log: it was not swapped in."""


@dataclass
class Rebuilt:
    name: str
    events: int
    seconds: float
    replaced: str
    verified: int | None = None
    """Conversations the new version was checked equal to the log in before the swap (None: ``force``)."""


def rebuild(settings: Settings, name: str, *, topic: str | None = None, stop: threading.Event | None = None,
            watch: Callable[[Projector], None] = lambda projector: None, force: bool = False) -> Rebuilt:
    """The store makes a new version of itself; the log goes into it; the store swaps it in; the rebuild's
    consumer group is deleted. ``watch`` is handed the projector before it runs (a progress bar reads its
    ``stats``)."""
    started = time.monotonic()
    tag = time.strftime("%Y%m%d%H%M%S")
    group = f"agentlog.{name}.rebuild.{tag}"
    target = rebuild_target(name, settings, tag)
    projector = Projector(target.projection, settings, topic=topic, group_id=group)
    watch(projector)
    stats = projector.run(stop=stop, until_caught_up=True)
    verified = None
    if force:
        log.warning("rebuild %s: swapped in with --force, not verified against the log", name)
    else:
        [report] = check(settings, topic or settings.events_topic, {name: target.snapshot(topic or settings.events_topic)})
        if not report.ok:
            target.discard()
            _forget_group(settings, group)
            raise RebuildRefused(f"rebuild of {name} not swapped in: the new version differs from the log "
                                 f"({report.summary()}); the old version still serves. Run `agentlog verify "
                                 f"--only {name}`, or rebuild with --force to swap it in anyway")
        verified = report.equal
    replaced = target.swap()
    _forget_group(settings, group)
    return Rebuilt(name, stats.events, time.monotonic() - started, replaced, verified)


def _forget_group(settings: Settings, group: str) -> None:
    """The rebuild's consumer group, deleted once it is done: the live projector carries on from the store."""
    admin = kafka.admin(settings)
    try:
        kafka.retrying(settings, lambda: [f.result(timeout=30) for f in admin.delete_consumer_groups(
            [group], request_timeout=30).values()], what=f"deleting the rebuild's group {group}")
    except StackError as exc:  # the rebuild itself is done: say it, do not undo it
        log.warning("rebuild: could not delete consumer group %s: %s", group, exc)
