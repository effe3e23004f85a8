"""A fatal error of the idempotent producer, provoked through librdkafka's own test hook against the real broker:
a new producer takes over and what the failed one held reaches the log, in order, and no append fails."""

from __future__ import annotations

import asyncio
import ctypes
import glob
import os
from collections import defaultdict
from pathlib import Path

import confluent_kafka
from confluent_kafka import Producer

from agentlog.deploy.settings import Settings
from agentlog.producers import Durability, EventLog
from tests.factories import make_conversation
from tests.producers.test_spool import _log_of

_OUT_OF_ORDER_SEQUENCE_NUMBER = 45
"""What a broker answers an idempotent producer whose batches it cannot order: fatal to the producer."""


def provoke_fatal(producer: Producer) -> None:
    """Raise a fatal error in ``producer`` as librdkafka would on the broker's answer (``rd_kafka_test_fatal_error``;
    the Python handle's first field after the object header is its ``rd_kafka_t``)."""
    [path] = glob.glob(os.path.join(os.path.dirname(confluent_kafka.__file__) + ".libs", "librdkafka*"))
    library = ctypes.CDLL(path)
    library.rd_kafka_test_fatal_error.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
    handle = ctypes.c_void_p.from_address(id(producer) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    assert library.rd_kafka_test_fatal_error(handle, _OUT_OF_ORDER_SEQUENCE_NUMBER, b"provoked by the test") == 0


def test_after_a_fatal_producer_error_a_new_producer_sends_what_the_old_one_held_in_order(
        stack: Settings, topic: str, tmp_path: Path) -> None:
    conversations = [make_conversation(tools=3) for _ in range(120)]

    async def run() -> tuple[list, int, Producer, Producer]:
        async with EventLog(stack, topic=topic, spool_dir=tmp_path, linger_ms=20) as log:
            first = log._producer
            futures = []
            for number, conversation in enumerate(conversations):
                if number == 40:
                    provoke_fatal(log._producer)  # while the producer holds what the last appends handed it
                futures += [log.append_nowait(e) for e in conversation]
                if number % 10 == 9:
                    await asyncio.sleep(0.01)
            late = await log.append(make_conversation(tools=0)[0], durability=Durability.BROKER)
            receipts = await asyncio.wait_for(asyncio.gather(*futures), 60)
            await log.flush(60)
            assert not late.spooled  # a broker-only append after the renewal waits for the broker, and gets it
            return receipts, log.renewals, first, log._producer

    receipts, renewals, first, second = asyncio.run(run())
    assert renewals == 1 and first is not second
    assert len(receipts) == sum(map(len, conversations))  # no append failed

    seen: dict[str, list[int]] = defaultdict(list)
    ids: dict[str, set[str]] = defaultdict(set)
    repeated = 0
    for event in _log_of(stack, topic):
        if event.event_id in ids[event.conversation_id]:
            repeated += 1  # one the broker took before the error and the new producer sent again
            continue
        ids[event.conversation_id].add(event.event_id)
        seen[event.conversation_id].append(event.sequence_number)
    for conversation in conversations:
        assert seen[conversation[0].conversation_id] == [e.sequence_number for e in conversation]
    assert repeated <= 5 * 100  # at most what was in flight (five requests to the one broker)


def test_a_fatal_error_while_the_spool_sends_is_recovered_too(stack: Settings, topic: str, tmp_path: Path) -> None:
    """The spool holds events (the producer's queue was full) and sends them itself when the error comes."""
    conversations = [make_conversation(tools=4) for _ in range(60)]

    async def run() -> tuple[list, int]:
        async with EventLog(stack, topic=topic, spool_dir=tmp_path,
                            producer_config={"queue.buffering.max.messages": 25}) as log:
            futures = [log.append_nowait(e) for c in conversations[:30] for e in c]
            provoke_fatal(log._producer)
            futures += [log.append_nowait(e) for c in conversations[30:] for e in c]
            receipts = await asyncio.wait_for(asyncio.gather(*futures), 60)
            await log.flush(60)
            return receipts, log.renewals

    receipts, renewals = asyncio.run(run())
    assert renewals == 1 and any(r.spooled for r in receipts)
    order: dict[str, list[int]] = defaultdict(list)
    for event in _log_of(stack, topic):
        if event.sequence_number not in order[event.conversation_id]:
            order[event.conversation_id].append(event.sequence_number)
    assert dict(order) == {c[0].conversation_id: [e.sequence_number for e in c] for c in conversations}
