"""The consumer runtime every projection runs on."""

from agentlog.consumers.runtime.loop import Projector, RunStats, group_for
from agentlog.projections.base import Batch, Projection, ProjectionError, Record, Rewind, StoreUnavailable

__all__ = ["Batch", "Projection", "ProjectionError", "Projector", "Record", "Rewind", "RunStats", "StoreUnavailable",
           "group_for"]
