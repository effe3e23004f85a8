"""The contract's bookkeeping, without services: positions, rewinds, a batch's ends."""

from __future__ import annotations

from agentlog.projections.base import FROM_BEGINNING, Batch, Positions, Record
from tests.factories import make_conversation


def _batch(starts: dict[int, int]) -> Batch:
    batch = Batch("t")
    for partition, start in starts.items():
        batch.saw(partition, start)
        batch.saw(partition, start + 1)
    return batch


def test_positions_name_the_beginning() -> None:
    positions = Positions.of({0: 5}, [0, 1])
    assert positions == {0: 5, 1: FROM_BEGINNING}
    assert (positions.next_offset(0, low=2), positions.next_offset(1, low=2)) == (5, 2)


def test_a_batch_ahead_of_its_store_rewinds_to_the_store() -> None:
    batch = _batch({0: 10, 1: 3})
    assert batch.ends == {0: 12, 1: 5} and batch.starts == {0: 10, 1: 3}
    assert batch.rewind_to({0: 10, 1: 3}, set()) == {}
    assert batch.rewind_to({0: 7, 1: 3}, set()) == {0: 7}


def test_a_store_that_holds_nothing_is_read_again_from_the_beginning_once() -> None:
    restarted: set[int] = set()
    assert _batch({0: 10}).rewind_to({}, restarted) == {0: FROM_BEGINNING}
    assert _batch({0: 10}).rewind_to({}, restarted) == {}  # once: the store may hold nothing of it for good
    assert _batch({1: 0}).rewind_to({}, restarted) == {}   # a batch from offset 0 needs no rewind


def test_single_and_positions_only_keep_the_partitions_ends() -> None:
    events = make_conversation(tools=1)
    batch = Batch("t")
    for offset, event in enumerate(events):
        batch.saw(0, offset)
        batch.records.append(Record(event, "t", 0, offset))
    one = batch.single(batch.records[1])
    assert (len(one), one.ends, one.starts) == (1, {0: 2}, {0: 0})
    assert (len(batch.positions_only()), batch.positions_only().ends) == (0, {0: len(events)})
