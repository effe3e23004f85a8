"""The dead-letter topic."""

from agentlog.consumers.dlq.dead_letters import DeadLetters

__all__ = ["DeadLetters"]
