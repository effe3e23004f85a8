"""The stores' own Prometheus metrics (the runtime's are in ``consumers/runtime/prometheus``)."""

from __future__ import annotations

from prometheus_client import Counter

SEQUENCE_ANOMALIES = Counter("agentlog_sequence_anomalies_total", "Gaps or duplicates within a conversation",
                             ["projection", "kind"])
