"""The OTLP/HTTP ingest: GenAI spans from any framework's OpenTelemetry exporter become agentlog events."""

from agentlog.producers.ingest.http import Ingest, attach
from agentlog.producers.ingest.staging import Flusher, Staging

__all__ = ["Flusher", "Ingest", "Staging", "attach"]
