"""The projectors' Prometheus metrics, labelled by projection."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from agentlog.projections.base.prometheus import SEQUENCE_ANOMALIES

__all__ = ["BATCHES", "BATCH_SECONDS", "DEAD_LETTERS", "EVENTS_APPLIED", "LAG", "PROJECTOR_UP", "RETRIES",
           "SEQUENCE_ANOMALIES"]

EVENTS_APPLIED = Counter("agentlog_events_applied_total", "Events applied to the store", ["projection"])
BATCHES = Counter("agentlog_batches_total", "Batches applied", ["projection"])
BATCH_SECONDS = Histogram("agentlog_batch_seconds", "Time to apply one batch", ["projection"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LAG = Gauge("agentlog_consumer_lag", "Messages behind the end of the log", ["projection", "partition"])
DEAD_LETTERS = Counter("agentlog_dead_letters_total", "Events sent to the dead-letter topic", ["projection", "reason"])
RETRIES = Counter("agentlog_store_retries_total", "Batches retried after a store failure", ["projection"])
PROJECTOR_UP = Gauge("agentlog_projector_up", "1 while the projector's thread runs", ["projection"])
