"""The saga orchestrator: every transition is an event in the conversation's stream before the next
thing happens, so a new orchestrator can finish what a crashed one started.

Run:       saga_started, then per step saga_step_completed (with its result) or saga_step_failed;
           all completed: saga_completed.
Rollback:  the completed steps' compensations in reverse order, each saga_step_compensated or, after
           its retries, saga_compensation_failed (a person must step in) — the others still run;
           then saga_rolled_back. The step that failed is not compensated (it had no effect), unless
           it was in flight at a crash and declared ``on_crash="compensate"``.
Subject:   the saga's events carry the subject of the conversation they are recorded in
           (``Conversation(subject_id=...)``); a recovery takes it from the conversation's events.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable

from agentlog.producers.event_log import Durability, EventLog
from agentlog.producers.recorder import Conversation, to_json
from agentlog.producers.saga.checkpoint import Checkpoints
from agentlog.producers.saga.definition import Retry, Saga, Step, call
from agentlog.producers.saga.errors import SagaBusy
from agentlog.producers.saga.lease import Leases
from agentlog.producers.saga.recovery import unfinished
from agentlog.schemas.events import Event, EventType, SagaStatus
from agentlog.schemas.saga import SagaState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    saga_id: str
    status: SagaStatus
    """COMPLETED, ROLLED_BACK or NEEDS_INTERVENTION."""
    failed_step: str | None = None
    error: str | None = None
    results: dict[str, Any] | None = None


class Orchestrator:
    """Runs sagas inside conversations. ``leases`` keeps two orchestrators off the same saga."""

    def __init__(self, *, leases: Leases | None = None, agent: str = "saga-orchestrator",
                 observer: Callable[[Event], Any] | None = None, checkpoints: Checkpoints | None = None) -> None:
        self.leases = leases
        self.checkpoints = checkpoints or (Checkpoints(leases.settings) if leases is not None else None)
        """Where recovery starts reading the log (with leases, beside them; without, from the beginning)."""
        self.agent = agent
        self.observer = observer

    async def run(self, saga: Saga, conversation: Conversation) -> Outcome:
        """Run ``saga`` from the start, recording it in ``conversation``."""
        progress = SagaState(f"saga-{uuid.uuid4().hex[:12]}")
        async with self._lease(progress.saga_id):
            await self._record(conversation, progress, EventType.SAGA_STARTED, {
                "saga_id": progress.saga_id, "saga_name": saga.name, "steps": [s.name for s in saga.steps],
                "args_json": to_json({s.name: s.args for s in saga.steps}, f"arguments of saga {saga.name}")})
            return await self._drive(saga, conversation, progress, recovering=False)

    async def resume(self, saga: Saga, conversation: Conversation, progress: SagaState) -> Outcome:
        """Finish a saga that a stopped orchestrator left unfinished, from what its events say."""
        async with self._lease(progress.saga_id):
            return await self._drive(saga, conversation, progress, recovering=True)

    async def recover(self, log: EventLog, sagas: Iterable[Saga]) -> list[Outcome]:
        """Finish every saga of the log that started and did not finish, and that no other orchestrator
        holds. Sagas of names not in ``sagas`` are left alone (and logged)."""
        known = {saga.name: saga for saga in sagas}
        outcomes = []
        for found in await asyncio.to_thread(unfinished, log.settings, log.topic, checkpoints=self.checkpoints):
            saga = known.get(found.progress.name)
            if saga is None:
                logger.error("saga %s (%s) is unfinished and has no definition here", found.progress.saga_id,
                           found.progress.name)
                continue
            conversation = Conversation(log, agent=self.agent, conversation_id=found.conversation_id,
                                        next_sequence=found.next_sequence, subject_id=found.subject_id)
            try:
                outcomes.append(await self.resume(saga, conversation, found.progress))
            except SagaBusy:
                logger.info("saga %s is driven by another orchestrator", found.progress.saga_id)
        return outcomes

    async def _drive(self, saga: Saga, conv: Conversation, progress: SagaState, *, recovering: bool) -> Outcome:
        error = None
        if progress.failed_step is None:
            for index, step in enumerate(saga.steps):
                if step.name in progress.completed:
                    continue
                args = progress.args.get(step.name, step.args)
                if recovering and step.on_crash == "compensate":
                    error = "the orchestrator stopped while this step was in flight"
                    await self._failed(conv, progress, step, index, error, attempts=0)
                    break
                recovering = False  # only the first step not completed can have been in flight
                ok, value, attempts = await self._attempt(step.action, step, args, self._key(progress, step))
                if not ok:
                    error = value
                    await self._failed(conv, progress, step, index, error, attempts)
                    break
                await self._record(conv, progress, EventType.SAGA_STEP_COMPLETED, {
                    "saga_id": progress.saga_id, "step": step.name, "step_index": index,
                    "idempotency_key": self._key(progress, step), "attempts": attempts,
                    "result_json": to_json(value, f"result of saga step {step.name}")})
            else:
                await self._record(conv, progress, EventType.SAGA_COMPLETED, {"saga_id": progress.saga_id})
                return Outcome(progress.saga_id, SagaStatus.COMPLETED, results=dict(progress.results))
        return await self._roll_back(saga, conv, progress, error)

    async def _roll_back(self, saga: Saga, conv: Conversation, progress: SagaState, error: str | None) -> Outcome:
        undo = [s for s in saga.steps if s.name in progress.results or s.name == progress.in_doubt]
        for step in reversed(undo):
            if step.name in progress.compensated or step.name in progress.compensation_failed:
                continue
            index = saga.steps.index(step)
            if step.compensate is None:
                continue
            args = progress.args.get(step.name, step.args)
            ok, value, attempts = await self._attempt(step.compensate, step, args, self._key(progress, step),
                                                      result=progress.results.get(step.name))
            if ok:
                await self._record(conv, progress, EventType.SAGA_STEP_COMPENSATED, {
                    "saga_id": progress.saga_id, "step": step.name, "step_index": index,
                    "result_json": to_json(value, f"compensation result of {step.name}")})
            else:
                logger.error("saga %s: compensation of %s failed for good: %s", progress.saga_id, step.name, value)
                await self._record(conv, progress, EventType.SAGA_COMPENSATION_FAILED, {
                    "saga_id": progress.saga_id, "step": step.name, "step_index": index, "error": value,
                    "attempts": attempts})
        reason = error or progress.error or "unknown"
        await self._record(conv, progress, EventType.SAGA_ROLLED_BACK, {
            "saga_id": progress.saga_id, "failed_step": progress.failed_step or "", "reason": reason})
        return Outcome(progress.saga_id, progress.status, progress.failed_step, reason)

    async def _failed(self, conv: Conversation, progress: SagaState, step: Step, index: int, error: str,
                      attempts: int) -> None:
        await self._record(conv, progress, EventType.SAGA_STEP_FAILED, {
            "saga_id": progress.saga_id, "step": step.name, "step_index": index,
            "idempotency_key": self._key(progress, step), "error": error, "attempts": attempts})

    @staticmethod
    def _key(progress: SagaState, step: Step) -> str:
        return f"{progress.saga_id}:{step.name}"

    @staticmethod
    async def _attempt(function: Callable[..., Any], step: Step, args: dict[str, Any], key: str, **extra: Any) -> tuple[bool, Any, int]:
        """(ok, result or error text, attempts made), retrying per the step's policy and timeout."""
        retry: Retry = step.retry
        wait = retry.backoff
        error = ""
        for attempt in range(1, retry.attempts + 1):
            try:
                coroutine = call(function, args, idempotency_key=key, **extra)
                result = await (asyncio.wait_for(coroutine, step.timeout) if step.timeout else coroutine)
                return True, result, attempt
            except asyncio.TimeoutError:
                error = f"timed out after {step.timeout}s"
            except Exception as exc:  # the step's own failure, whatever it is, is the saga's business
                error = f"{type(exc).__name__}: {exc}"
            if attempt < retry.attempts:
                await asyncio.sleep(wait)
                wait *= 2
        return False, error, retry.attempts

    async def _record(self, conv: Conversation, progress: SagaState, kind: EventType,
                      payload: dict[str, Any]) -> None:
        """Put the transition in the log, then fold it into ``progress``: the saga's state is what its
        events say, whether this orchestrator wrote them or a stopped one did (``recovery``). The broker
        must have it (a spooled transition is not yet in the log a recovering orchestrator reads): when
        it does not answer, the saga stops here with BrokerUnavailable and recovery finishes it later."""
        event = await conv.record(kind, payload, agent=self.agent, durability=Durability.BROKER)
        progress.apply(event)
        if self.observer is not None:
            self.observer(event)

    @asynccontextmanager
    async def _lease(self, saga_id: str) -> AsyncIterator[None]:
        if self.leases is None:
            yield
            return
        if not await asyncio.to_thread(self.leases.acquire, saga_id):
            raise SagaBusy(f"saga {saga_id} is being driven by another orchestrator")
        renewing = asyncio.create_task(self._renew(saga_id))
        try:
            yield
        finally:
            renewing.cancel()
            await asyncio.to_thread(self.leases.release, saga_id)

    async def _renew(self, saga_id: str) -> None:
        assert self.leases is not None
        while True:
            await asyncio.sleep(self.leases.ttl / 3)
            await asyncio.to_thread(self.leases.acquire, saga_id)

