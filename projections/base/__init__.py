"""The contract every store implements, below the stores and the runtime that feeds them.

A store is a ``Projection``: it takes a ``Batch`` of decoded events with their Kafka positions, says where it
stands as ``Positions``, and answers an outage with ``StoreUnavailable``, a store behind the batch with
``Rewind`` and an event it cannot take with ``ProjectionError``.
"""

from agentlog.projections.base.batch import FROM_BEGINNING, Batch, Positions, Record
from agentlog.projections.base.errors import ProjectionError, Rewind, StoreUnavailable
from agentlog.projections.base.projection import Projection

__all__ = ["FROM_BEGINNING", "Batch", "Positions", "Projection", "ProjectionError", "Record", "Rewind",
           "StoreUnavailable"]
