"""The spool's record format, fuzzed: what is written reads back equal, and whatever the disk holds, reading it
yields the intact records before the damage and one CorruptRecord, never another error."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agentlog.producers.spool.records import HELD, MAGIC, CorruptRecord, Record, read
from agentlog.producers.spool.segments import Segment

records = st.builds(
    Record,
    topic=st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True),
    key=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=16).map(str.encode),
    value=st.binary(max_size=2000),
    sequence_number=st.integers(min_value=1, max_value=2**53),
    spooled_at=st.floats(min_value=0, max_value=4e9),
    flags=st.sampled_from([0, HELD]),
    headers=st.lists(st.tuples(st.from_regex(r"[a-z._-]{1,40}", fullmatch=True), st.binary(max_size=200)),
                     max_size=3).map(tuple),
)


def _read_all(data: bytes) -> tuple[list[Record], int | None]:
    """The records read, and where the damage begins (None: none)."""
    found = []
    try:
        for item in read(io.BytesIO(data)):
            found.append(item.record)
    except CorruptRecord as exc:
        return found, exc.args[1]
    return found, None


@given(st.lists(records, max_size=20))
def test_records_read_back_equal(written: list[Record]) -> None:
    assert _read_all(MAGIC + b"".join(r.encode() for r in written)) == (written, None)


@given(st.lists(records, min_size=1, max_size=10), st.binary(min_size=1, max_size=300))
def test_whatever_follows_the_records_is_found_where_they_end(written: list[Record], tail: bytes) -> None:
    whole = MAGIC + b"".join(r.encode() for r in written)
    found, damage = _read_all(whole + tail)
    assert found[:len(written)] == written
    assert damage is None or damage >= len(whole)


@given(st.lists(records, min_size=1, max_size=10), st.data())
def test_a_flipped_byte_is_corruption_not_a_crash(written: list[Record], data: st.DataObject) -> None:
    whole = bytearray(MAGIC + b"".join(r.encode() for r in written))
    at = data.draw(st.integers(min_value=len(MAGIC), max_value=len(whole) - 1))
    whole[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    found, damage = _read_all(bytes(whole))
    assert damage is not None and damage <= at
    assert found == written[:len(found)]


@settings(max_examples=30, deadline=None)
@given(st.lists(records, min_size=1, max_size=5), st.binary(min_size=1, max_size=100))
def test_a_segment_with_a_torn_tail_keeps_its_records_and_sets_the_tail_aside(
        tmp_path_factory, written: list[Record], tail: bytes) -> None:
    directory: Path = tmp_path_factory.mktemp("segment")
    whole = MAGIC + b"".join(r.encode() for r in written)
    (directory / "00000001.log").write_bytes(whole + tail)
    segment = Segment(directory, 1)
    problem = segment.scan(lambda key: 0)
    if problem is None:  # the tail happened to be whole records (a 1 in 2^32 checksum): nothing to set aside
        return
    assert segment.count == len(written) and segment.unacked == len(written)
    assert (directory / "00000001.log").read_bytes() == whole
    assert (directory.parent / f"{directory.name}-00000001.corrupt").read_bytes() == tail


def test_failed_log_keeps_refused_records_up_to_its_limit_and_counts_the_rest(tmp_path: Path) -> None:
    from agentlog.producers.spool import Spool
    from agentlog.producers.spool.spool import failed_count
    from agentlog.producers.spool.status import status

    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, failed_bytes=4096)
    spool.claim()
    records = [Record("t", b"conv-1", bytes(1000), n, 0.0) for n in range(1, 11)]
    ids = spool.write(records)
    spool.fail([(rid, record) for rid, record in zip(ids, records, strict=True)], "refused: too large")
    kept = failed_count(spool.root)
    assert 0 < kept < 10 and (spool.root / "failed.log").stat().st_size <= 4096
    assert spool.figures().failed == kept and spool.figures().dropped == 10 - kept
    found = status(spool.root)
    assert (found.failed, found.dropped) == (kept, 10 - kept) and found.as_json()["dropped"] == 10 - kept
    assert spool.figures().events == 0  # refused either way: nothing is sent again
    spool.close()
