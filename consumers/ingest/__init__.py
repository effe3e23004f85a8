"""The OTLP/HTTP ingest: GenAI spans from any framework's OpenTelemetry exporter become agentlog events."""

from agentlog.consumers.ingest.http import Ingest, attach
from agentlog.consumers.ingest.staging import Flusher, Staging

__all__ = ["Flusher", "Ingest", "Staging", "attach"]
