"""OpenTelemetry's GenAI spans as agentlog events: the mapping (``genai``) that the OTLP ingest and the
framework adapters share, so a run reaches the log as the same events whichever way it comes."""

from agentlog.producers.otel.genai import Kind, Point, Span, SpanEvent, State, Timeline, conversation_of, points

__all__ = ["Kind", "Point", "Span", "SpanEvent", "State", "Timeline", "conversation_of", "points"]
