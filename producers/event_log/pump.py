"""The spool thread: writes what must be spooled (one fsync for all waiting), notes what the broker
acknowledged or refused, and sends what the spool holds, oldest first, as far as the producer's queue takes.

Once the broker has said which cluster it is, it adopts what stopped processes left in the spool directory
for that cluster; until that is sent, new events go behind it (``Pending.adopting``). When the disk fails, what needed the spool fails and the broker path
goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Callable

from confluent_kafka import KafkaError, KafkaException, Producer

from agentlog.producers.errors import ProducerError
from agentlog.producers.event_log.appends import Entry, NotAcknowledged, Pending
from agentlog.producers.event_log.complaints import Complaints
from agentlog.producers.event_log.deliveries import Deliveries
from agentlog.producers.event_log.receipts import Durability, Receipt
from agentlog.producers.spool import Figures, Spool, SpoolFull
from agentlog.producers.spool.records import Record
from agentlog.producers.spool.spool import RecordId
from agentlog.producers.spool.status import describe
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import SchemaError

log = logging.getLogger(__name__)

_SEND_CHUNK = 2_000
_SEND_QUEUE = 100_000
"""The spool hands the producer more only while it holds fewer messages than this."""


class SpoolPump:
    def __init__(self, pending: Pending, spool: Spool, producer: Producer, deliveries: Deliveries, *,
                 codec: Codec, complaints: Complaints, not_acknowledged: NotAcknowledged, topic: str,
                 closed: threading.Event, stopping: threading.Event, renew: Callable[[Producer], None]) -> None:
        self.pending = pending
        self.spool = spool
        self.producer = producer
        self.deliveries = deliveries
        self.codec = codec
        self.complaints = complaints
        self.not_acknowledged = not_acknowledged
        self.topic = topic
        self.closed = closed
        """The log is closed: send nothing more."""
        self.stopping = stopping
        """Note what is left to note, then stop."""
        self.renew = renew
        """Replaces a producer that failed for good (``EventLog._renew``)."""
        self.cluster: str | None = None
        """The id of the cluster the broker said it is (set by the EventLog once it answers)."""
        self.left: Figures | None = None
        """What the spool still held when the thread stopped."""

    def run(self) -> None:
        pending = self.pending
        try:
            blocked = False
            named = False
            while True:
                if not named and self.cluster is not None:
                    named = True
                    self._adopt(self.cluster)
                with pending.lock:
                    if not (pending.to_write or pending.spool_acks or pending.spool_fails or self.stopping.is_set()
                            or (self.spool.sending and not blocked and len(self.producer) < _SEND_QUEUE)):
                        pending.wake.wait(0.01 if blocked else 0.05)
                    batch = [e for e in pending.to_write if not (e.acked or e.failed)]
                    pending.to_write = []
                    acks, pending.spool_acks = pending.spool_acks, []
                    fails, pending.spool_fails = pending.spool_fails, []
                    resend, pending.resend = pending.resend, None
                    stopping = self.stopping.is_set()
                try:
                    self._write(batch)
                    self.spool.ack(acks)
                    for reason, group in _by_reason(fails).items():
                        self.spool.fail(group, reason)
                    if resend is not None:
                        self._resend(resend)
                    blocked = self._send()
                    self.spool.write_status()
                except OSError as exc:  # the disk failed: what needed the spool fails, the broker path goes on
                    log.error("the spool at %s failed: %s", self.spool.root, exc)
                    self._give_up(batch, f"the spool at {self.spool.root} failed ({exc.strerror or exc})")
                    blocked = True
                pending.hand_over()
                if stopping:
                    break
        finally:
            self.left = self.spool.close()

    def _adopt(self, cluster: str) -> None:
        """The broker said which cluster it is: adopt what stopped processes left for it (or for none named)."""
        self.spool.name_cluster(cluster)
        try:
            self.spool.adopt()
        except OSError as exc:  # what a stopped process left cannot be read: said, and left where it is
            self.spool.problems.append(f"cannot adopt what stopped processes left ({exc})")
        for problem in self.spool.problems:
            log.error("spool: %s", problem)

    def _resend(self, successor: Producer) -> None:
        """A producer failed for good: what it held is in the spool (the EventLog queued it before asking), and
        the spool sends every record not acknowledged again, through the new producer, before anything new."""
        self.producer = successor
        self.spool.resend()
        with self.pending.lock:
            self.pending.adopting = True
            self.pending.held = sum(1 for e in self.pending.to_write if e.held)  # the rest: in resend's cursors

    def _give_up(self, batch: list[Entry], problem: str) -> None:
        """Fail what waited for a spool that failed; nothing is held any more (what is on disk stays there)."""
        pending = self.pending
        with pending.lock:
            for entry in batch + pending.to_write:
                if entry.record is None and not entry.resolved:
                    self._unspooled(entry, problem)
            pending.to_write = []
            pending.held = 0
            pending.adopting = False

    def _write(self, batch: list[Entry]) -> None:
        if not batch:
            return
        if any(e.held for e in batch):
            self.spool.hold()
        problem = None
        try:
            ids = self.spool.write([e.as_record(self.topic) for e in batch])
        except OSError as exc:
            problem = f"cannot write the spool at {self.spool.root} ({exc.strerror})"
            ids = [None] * len(batch)
        pending = self.pending
        with pending.lock:
            for entry, rid in zip(batch, ids, strict=True):
                if rid is None:
                    self._unspooled(entry, problem)
                    continue
                entry.record = rid
                if entry.acked:
                    pending.spool_acks.append(rid)
                elif entry.durability is Durability.SPOOL:
                    pending.resolve(entry, Receipt(Durability.SPOOL))
                elif entry.expired:
                    pending.resolve(entry, self.not_acknowledged(entry.event))
                elif entry.held or entry.resent:
                    pending.waiting_for[rid] = entry

    def _unspooled(self, entry: Entry, problem: str | None) -> None:
        """An entry the spool could not take: it is full, or the disk failed (``problem``). Under the lock."""
        if entry.held:
            self.pending.held -= 1  # it will never be sent
            entry.failed = True
        kind: type[ProducerError] = ProducerError
        if problem is None:
            figures = self.spool.figures()
            kind, problem = SpoolFull, (
                f"the spool at {self.spool.root} is full: {describe(figures)} since {_clock(figures.oldest)}, "
                f"{figures.bytes / 2**20:.0f} MiB of its {self.spool.max_bytes / 2**20:.0f} MiB "
                "(AGENTLOG_SPOOL_MAX_BYTES)")
        problem += f", and Kafka at {self.complaints.bootstrap} has not acknowledged this event"
        if entry.produced:
            problem += "; it is still queued in memory and reaches the log if the broker answers before this " \
                       "process exits"
        self.pending.resolve(entry, kind(problem, taken=entry.produced))

    def _send(self) -> bool:
        """Hand the producer what the spool must send itself, oldest first, as far as its queue takes; True
        when some is left (the spool thread then pauses a little)."""
        while self.spool.sending and not self.closed.is_set():
            chunk = self.spool.unsent(_SEND_CHUNK)
            for position, (rid, record) in enumerate(chunk):
                problem = self._check(record)
                if problem is not None:
                    self.spool.fail([(rid, record)], problem)
                else:
                    try:
                        self.producer.produce(record.topic, value=record.value, key=record.key,
                                              headers=list(record.headers) or None,
                                              on_delivery=partial(self.deliveries.sent, rid, record))
                    except BufferError:
                        self.spool.give_back(chunk[position:])
                        return True
                    except KafkaException as exc:
                        if exc.args[0].code() == KafkaError._FATAL:  # a new producer takes over and resends
                            self.spool.give_back(chunk[position:])
                            self.renew(self.producer)
                            return True
                        self.spool.fail([(rid, record)], exc.args[0].str())
                if record.held and self.spool.held_here(rid):
                    with self.pending.lock:
                        self.pending.held -= 1
            if not chunk:
                break
        with self.pending.lock:
            if not self.spool.adopting:
                self.pending.adopting = False
                if not self.pending.held:
                    self.spool.caught_up()
        return self.spool.sending  # what is left waits for the producer's room, or for the spool's next write

    def _check(self, record: Record) -> str | None:
        """Why a record read back from disk must not be sent, if it must not: it is not an event, or not the
        event its record says."""
        try:
            event = self.codec.decode(record.value, key=record.key)
        except SchemaError as exc:
            return f"not an event: {exc}"
        if event.sequence_number != record.sequence_number:
            return "its event's sequence number is not the record's"
        return None


def _by_reason(fails: list[tuple[RecordId, Record, str]]) -> dict[str, list[tuple[RecordId, Record]]]:
    grouped: dict[str, list[tuple[RecordId, Record]]] = {}
    for rid, record, reason in fails:
        grouped.setdefault(reason, []).append((rid, record))
    return grouped


def _clock(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if at else "now"
