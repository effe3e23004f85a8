"""The consumer runtime every projection runs on."""

from agentlog.consumers.runtime.batch import Batch, Record
from agentlog.consumers.runtime.errors import ProjectionError, Rewind, StoreUnavailable
from agentlog.consumers.runtime.loop import Projector, RunStats, group_for
from agentlog.consumers.runtime.projection import Projection

__all__ = ["Batch", "Projection", "ProjectionError", "Projector", "Record", "Rewind", "RunStats", "StoreUnavailable",
           "group_for"]
