"""Sagas for multi-agent workflows: event-sourced, compensating, recoverable after a crash."""

from agentlog.producers.saga.definition import Retry, Saga, Step
from agentlog.producers.saga.errors import SagaBusy, SagaDefinitionError, SagaError
from agentlog.producers.saga.lease import Leases
from agentlog.producers.saga.orchestrator import Orchestrator, Outcome

__all__ = ["Leases", "Orchestrator", "Outcome", "Retry", "Saga", "SagaBusy", "SagaDefinitionError", "SagaError",
           "Step"]
