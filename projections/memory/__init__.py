"""The in-memory store: the smallest store that keeps the contract (``projections.base``), for the contract
tests that run with no service (``make check``) and as the pattern a fourth store follows. It is not in the
registry: no projector feeds it."""

from agentlog.projections.memory.store import STORE, MemoryProjection, World, world

__all__ = ["STORE", "MemoryProjection", "World", "world"]
