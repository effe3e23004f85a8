"""The EventLog and the Conversation recorder against the real broker."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
import threading
import time
import uuid
from dataclasses import replace

import pytest
from confluent_kafka import Consumer

from agentlog.deploy.partitioner import partition_for
from agentlog.deploy.settings import Settings
from agentlog.producers import (
    AppendsFailed,
    BrokerUnavailable,
    Conversation,
    Durability,
    EventLog,
    EventTooLarge,
    NotSerializable,
    SequenceError,
    SyncEventLog,
    tool,
)
from agentlog.schemas import Codec, Event, EventType, SchemaError
from tests.conftest import opened
from tests.factories import make_conversation

TEXTUAL = {EventType.CONVERSATION_STARTED, EventType.TOOL_CALLED, EventType.TOOL_RESULT,
           EventType.HANDOFF_INITIATED, EventType.RESPONSE_GENERATED}
"""Event types whose every payload carries text (what sealing covers)."""


def read_all(settings: Settings, topic: str, expected: int, timeout: float = 30) -> list:
    consumer = Consumer(settings.kafka_config(**{"group.id": f"t-{uuid.uuid4()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
    time.sleep(0.5)
    messages += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
    consumer.close()
    return messages


def test_appended_events_read_back_equal_keyed_and_gapless(stack: Settings, topic: str) -> None:
    conversations = [make_conversation(tools=t) for t in (1, 2, 3)]

    async def append_all() -> None:
        async with EventLog(stack, topic=topic) as log:
            receipts = await asyncio.gather(*(log.append(e) for conv in conversations for e in conv))
            assert {r.durability for r in receipts} == {Durability.BROKER}
            assert {r.position.topic for r in receipts} == {topic}

    asyncio.run(append_all())
    sent = [e for conv in conversations for e in conv]
    messages = read_all(stack, topic, len(sent))
    codec = Codec()
    sealed = [codec.decode(m.value()) for m in messages]
    assert all(e.sealed is not None for e in sealed if e.event_type in TEXTUAL)  # their text is sealed in the log
    decoded = [(m.key().decode(), m.partition(), e) for m, e in zip(messages, opened(stack, sealed), strict=True)]
    assert sorted((e.event_id for _, _, e in decoded)) == sorted(e.event_id for e in sent)
    by_id = {e.event_id: e for e in sent}
    for key, partition, event in decoded:
        assert event == by_id[event.event_id]
        assert key == event.conversation_id
        assert partition == partition_for(key, stack.partitions)
    for conv in conversations:
        in_log = sorted(e.sequence_number for _, _, e in decoded if e.conversation_id == conv[0].conversation_id)
        assert in_log == list(range(1, len(conv) + 1))


def test_append_many_appends_a_batch_in_order_and_resolves_once_all_are_acknowledged(stack: Settings,
                                                                                    topic: str) -> None:
    conversations = [make_conversation(tools=t) for t in (1, 2, 3)]
    batch = [e for row in itertools.zip_longest(*conversations) for e in row if e is not None]  # interleaved

    async def append() -> object:
        async with EventLog(stack, topic=topic) as log:
            receipts = await log.append_many(batch)
            empty = await log.append_many([])
            return receipts, empty

    receipts, empty = asyncio.run(append())
    assert (receipts.acknowledged, receipts.spooled, receipts.durability) == (len(batch), 0, Durability.BROKER)
    assert empty.acknowledged == 0
    messages = read_all(stack, topic, len(batch))
    codec = Codec()
    decoded = [codec.decode(m.value(), key=m.key()) for m in messages]
    assert sorted(e.event_id for e in decoded) == sorted(e.event_id for e in batch)
    for conv in conversations:
        assert [e.sequence_number for e in decoded if e.conversation_id == conv[0].conversation_id] == \
            [e.sequence_number for e in conv]


def test_append_many_refuses_a_bad_batch_before_sending_any_of_it_and_fails_alone_what_the_broker_refuses(
        stack: Settings, topic: str) -> None:
    """A bad event (NaN, numbers going backwards within the batch) raises before anything is sent, and the
    conversations' numbers stay as they were; an event the broker refuses fails alone, named, the others
    are acknowledged."""
    conv = make_conversation(tools=1)
    nan = Event("conv-nan", 1, EventType.LLM_CALLED, "a", {"model": "m", "input_tokens": 1, "output_tokens": 1,
                                                          "latency_ms": float("nan"), "cost_usd": 0.0})
    big = Event("conv-big", 1, EventType.RESPONSE_GENERATED, "a", {"response": "x" * 2_000_000})
    fine = Event("conv-fine", 1, EventType.RESPONSE_GENERATED, "a", {"response": "ok"})

    async def append() -> AppendsFailed:
        async with EventLog(stack, topic=topic) as log:
            with pytest.raises(SchemaError, match="latency_ms"):
                log.append_many([*conv, nan])
            with pytest.raises(SequenceError, match="backwards"):
                log.append_many([conv[0], conv[1], conv[0]])
            assert (await log.append_many(conv)).acknowledged == len(conv)  # the refusals used no numbers
            with pytest.raises(AppendsFailed) as failed:
                await log.append_many([big, fine])
            return failed.value

    failed = asyncio.run(append())
    assert [(e.event_id, type(error)) for e, error in failed.failed] == [(big.event_id, EventTooLarge)]
    assert failed.receipts.acknowledged == 1 and "1 of 2 events were not appended" in str(failed)
    assert sorted(Codec().decode(m.value()).event_id for m in read_all(stack, topic, len(conv) + 1)) == \
        sorted([e.event_id for e in conv] + [fine.event_id])


def test_the_recorder_and_tool_wrapper_record_the_seed_conversation(stack: Settings, topic: str) -> None:
    @tool
    async def lookup_order(order_id: str) -> dict:
        return {"status": "delivered", "amount": 89.99}

    @tool("issue_refund")
    async def refund(order_id: str, amount: float) -> dict:
        raise RuntimeError("payment gateway timeout")

    async def run() -> str:
        async with EventLog(stack, topic=topic) as log:
            async with Conversation(log, agent="triage-agent") as conv:
                await conv.started("I want a refund for order ORD-5521")
                assert await lookup_order("ORD-5521") == {"status": "delivered", "amount": 89.99}
                await conv.handoff("refund-agent", "User requesting refund on delivered order")
                async with conv.call("check_refund_policy", {"order_id": "ORD-5521"}) as call:
                    call.output = {"eligible": True, "max_refund": 44.99, "type": "partial"}
                with pytest.raises(RuntimeError, match="gateway"):
                    await refund("ORD-5521", amount=44.99)
                await conv.llm_called("chat-m", input_tokens=900, output_tokens=120, latency_ms=640, cost_usd=0.004)
                await conv.response("I have issued a partial refund of $44.99...")
                return conv.conversation_id

    cid = asyncio.run(run())
    codec = Codec()
    events = sorted(opened(stack, [codec.decode(m.value()) for m in read_all(stack, topic, 11)]),
                    key=lambda e: e.sequence_number)
    assert [e.event_type.value for e in events] == [
        "conversation_started", "tool_called", "tool_result", "handoff_initiated", "tool_called", "tool_result",
        "tool_called", "error_occurred", "llm_called", "response_generated"]
    assert {e.conversation_id for e in events} == {cid}
    assert [e.sequence_number for e in events] == list(range(1, 11))
    assert json.loads(events[1].payload["input_json"]) == {"order_id": "ORD-5521"}
    assert json.loads(events[2].payload["output_json"]) == {"status": "delivered", "amount": 89.99}
    assert events[2].payload["duration_ms"] >= 0
    assert events[4].agent_name == "refund-agent"
    assert json.loads(events[6].payload["input_json"]) == {"order_id": "ORD-5521", "amount": 44.99}
    assert events[7].payload["error_type"] == "RuntimeError"
    assert events[7].payload["tool_call_id"] == events[6].payload["tool_call_id"]
    assert events[3].causation_id == events[2].event_id


def test_the_sync_facade_appends_and_flushes(stack: Settings, topic: str) -> None:
    with SyncEventLog(stack, topic=topic) as log:
        conv = log.conversation(agent="triage-agent")
        conv.started("Where is my order?")
        conv.response("It shipped.")
        receipt = log.append(conv.build(EventType.RESPONSE_GENERATED, {"response": "anything else?"}))
        assert receipt.position.topic == topic and not receipt.spooled
    assert len(read_all(stack, topic, 3)) == 3


@pytest.mark.parametrize("make, error, message", [
    (lambda c: c.build("tool_invoked", {}), SchemaError, "unknown event type"),
    (lambda c: c.build(EventType.HANDOFF_INITIATED, {"from_agent": "a", "reason": "r"}), SchemaError, "to_agent"),
    (lambda c: c.build(EventType.LLM_CALLED, {"model": "m", "input_tokens": 1.5, "output_tokens": 1,
                                              "latency_ms": 1.0, "cost_usd": 0.0}), SchemaError, "input_tokens"),
])
def test_bad_input_is_refused_before_anything_is_sent(stack: Settings, topic: str, make, error, message) -> None:
    async def run() -> None:
        async with EventLog(stack, topic=topic) as log:
            with pytest.raises(error, match=message):
                log.append_nowait(make(Conversation(log, agent="a")))

    asyncio.run(run())
    assert read_all(stack, topic, 1, timeout=3) == []


def test_non_json_input_and_backwards_sequence_numbers_are_refused(stack: Settings, topic: str) -> None:
    async def run() -> None:
        async with EventLog(stack, topic=topic) as log:
            conv = Conversation(log, agent="a")
            with pytest.raises(NotSerializable, match="input of tool lookup"):
                await conv.tool_called("lookup", {"when": object()})
            first = conv.build(EventType.CONVERSATION_STARTED, {"user_message": "hi", "channel": None})
            await log.append(first)
            with pytest.raises(SequenceError, match="goes backwards"):
                await log.append(replace(first, event_id=str(uuid.uuid4())))
            with pytest.raises(SequenceError, match="start at 1"):
                await log.append(replace(first, conversation_id="other", sequence_number=0))

    asyncio.run(run())
    assert len(read_all(stack, topic, 1)) == 1


def test_an_event_larger_than_the_limit_is_refused_naming_it(stack: Settings, topic: str) -> None:
    async def run() -> None:
        async with EventLog(stack, topic=topic) as log:
            event = Event("conv-big", 1, EventType.RESPONSE_GENERATED, "a", {"response": "x" * 2_000_000})
            with pytest.raises(EventTooLarge, match=event.event_id):
                await log.append(event)

    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_with_durability_broker_a_broker_that_is_down_fails_the_append_within_the_timeout_naming_it(
        stack: Settings, tmp_path) -> None:
    """As before the spool: BrokerUnavailable, naming the broker, within the timeout; the event is kept in the
    spool (it may still be sent), so the conversation's next event takes the next number."""
    address = f"127.0.0.1:{_free_port()}"
    down = replace(stack, kafka_bootstrap=address, spool_dir=tmp_path)

    async def run() -> tuple[float, int, str]:
        async with EventLog(down, timeout=3, durability="broker") as log:
            async with Conversation(log, agent="triage-agent") as conv:
                started = time.monotonic()
                with pytest.raises(BrokerUnavailable, match=address) as raised:
                    await conv.started("hello")
                return time.monotonic() - started, conv.next_sequence, str(raised.value)

    took, next_sequence, message = asyncio.run(run())
    assert took < 10
    assert next_sequence == 2 and "kept in the spool" in message


def test_the_sdk_refuses_what_a_store_would_refuse_before_sending(stack: Settings, topic: str) -> None:
    """NaN and friends fail the append, naming the field; nothing reaches the log; the conversation goes on."""
    from agentlog.schemas.rules import InvalidEvent

    async def record() -> list[str]:
        refused = []
        async with EventLog(stack, topic=topic) as log:
            async with Conversation(log, agent="triage-agent") as conv:
                await conv.started("hello")
                for attempt in (lambda: conv.llm_called("m", input_tokens=1, output_tokens=1, latency_ms=1.0,
                                                        cost_usd=float("nan")),
                                lambda: conv.llm_called("m", input_tokens=-3, output_tokens=1, latency_ms=1.0,
                                                        cost_usd=0.1),
                                lambda: conv.response("nul \x00 byte")):
                    with pytest.raises(InvalidEvent) as exc:
                        await attempt()
                    refused.append(str(exc.value))
                await conv.response("still here")
        return refused

    refused = asyncio.run(record())
    assert ["cost_usd must be a finite number" in refused[0], "input_tokens must be from 0" in refused[1],
            "response holds a NUL character" in refused[2]] == [True, True, True]
    events = sorted(Codec().decode(m.value()).sequence_number for m in read_all(stack, topic, 2))
    assert events == [1, 2]


def test_every_append_resolves_while_threads_switch_as_often_as_they_can(stack: Settings, topic: str) -> None:
    """Acknowledgements are handed to the event loop from the poller thread: however the threads interleave,
    none is lost (an append that never resolves would hang an agent, and close() behind it)."""

    async def converse(log: EventLog, rounds: int) -> int:
        conversation = Conversation(log, agent="racer")
        await conversation.started("hello")
        for n in range(rounds):
            await asyncio.wait_for(conversation.tool_called("lookup", {"n": n}, tool_call_id=f"c{n}"), 20)
        return rounds + 1

    async def run() -> int:
        appended = 0
        for _ in range(4):  # four logs, one after the other: each a new poller
            async with EventLog(stack, topic=topic) as log:
                appended += sum(await asyncio.gather(*(converse(log, 200) for _ in range(100))))
                await log.flush(30)
                assert log.in_memory() == {"unresolved": 0, "to_write": 0, "held": 0, "adopting": 0, "queued": 0}
        return appended

    results: list[int] = []
    racing = threading.Thread(target=lambda: results.append(asyncio.run(run())), daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the poller and the event loop take turns after every few bytecodes
    try:
        racing.start()
        racing.join(120)
    finally:
        sys.setswitchinterval(interval)
    assert not racing.is_alive(), "an append never resolved, and close() waits for it"
    assert results == [4 * 100 * 201]
