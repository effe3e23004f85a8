"""The producer SDK's Prometheus metrics, in the default registry of the agent's process.

``agentlog_appends_total{outcome}`` counts appends acknowledged by the broker, spooled and failed; the
``agentlog_spool_*`` gauges say what the spools of the process's open event logs hold now.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Iterator

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agentlog.producers.spool import Spool

APPENDS = Counter("agentlog_appends_total", "Appends, by outcome: acknowledged by the broker, spooled, failed",
                  ["outcome"])
OPEN: "weakref.WeakSet[Spool]" = weakref.WeakSet()
"""The spools of this process's open event logs."""


class _Spools(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        found: dict[str, list[float]] = {}
        for spool in list(OPEN):
            figures = spool.figures()
            totals = found.setdefault(str(spool.root), [0, 0, 0, 0, 0])
            totals[0] += figures.events
            totals[1] += figures.conversations
            totals[2] += figures.bytes
            totals[3] = max(totals[3], time.time() - figures.oldest if figures.oldest else 0.0)
            totals[4] = max(totals[4], figures.failed)
        families = [
            GaugeMetricFamily("agentlog_spool_events", "Events spooled, not yet acknowledged by the broker",
                              labels=["directory"]),
            GaugeMetricFamily("agentlog_spool_conversations", "Conversations with events in the spool",
                              labels=["directory"]),
            GaugeMetricFamily("agentlog_spool_bytes", "Bytes the spool takes on disk", labels=["directory"]),
            GaugeMetricFamily("agentlog_spool_oldest_age_seconds", "Age of the oldest spooled event",
                              labels=["directory"]),
            GaugeMetricFamily("agentlog_spool_failed_events", "Spooled events the broker refused for good (kept)",
                              labels=["directory"]),
        ]
        for directory, totals in found.items():
            for family, value in zip(families, totals, strict=True):
                family.add_metric([directory], value)
        yield from families


REGISTRY.register(_Spools())
