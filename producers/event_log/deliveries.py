"""Delivery reports to outcomes: the producer's callbacks note each report; the thread that polls the producer
then applies them all under one lock (``take``).

A report is of an event handed to the producer (``delivered``) or of a record the spool sent (``sent``). An
acknowledgement resolves the append and tells the spool its record may go; a refusal fails the append (and the
spool's record); a purge (this process is closing, or its credentials were refused) leaves a spooled event
spooled and fails the others, except the purge of a producer that failed for good: the spool sends those again.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from agentlog.producers.event_log.appends import Entry, Pending
from agentlog.producers.event_log.complaints import Complaints
from agentlog.producers.event_log.receipts import ACKNOWLEDGED, Durability, Position, Receipt
from agentlog.producers.spool.records import Record
from agentlog.producers.spool.spool import RecordId

GONE = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}
"""Not sent by this process (it refused our credentials, or we are closing): a spooled event stays spooled."""


class Deliveries:
    def __init__(self, pending: Pending, complaints: Complaints, topic: str) -> None:
        self.pending = pending
        self.complaints = complaints
        self.topic = topic
        self._delivered_reports: list[tuple[Entry, KafkaError | None, Message]] = []
        self._sent_reports: list[tuple[RecordId, Record, KafkaError | None, Message]] = []

    # -- the producer's callbacks (in whichever thread polls it) --------------------------------------------

    def delivered(self, entry: Entry, err: KafkaError | None, msg: Message) -> None:
        """The delivery report of an event handed to the producer."""
        self._delivered_reports.append((entry, err, msg))

    def sent(self, rid: RecordId, record: Record, err: KafkaError | None, msg: Message) -> None:
        """The delivery report of a record the spool sent."""
        self._sent_reports.append((rid, record, err, msg))

    # -- applied by the thread that polls -------------------------------------------------------------------

    def take(self) -> None:
        """Apply the reports the last poll served (each of a different message: their order is free)."""
        if not (self._delivered_reports or self._sent_reports):
            return
        delivered, self._delivered_reports = self._delivered_reports, []
        sent, self._sent_reports = self._sent_reports, []
        broker = Durability.BROKER
        pending = self.pending
        with pending.lock:
            resolutions = pending.resolutions  # under the lock: settle swaps the list for a new one
            for entry, err, msg in delivered:
                if err is None and entry.record is None and not entry.resolved:
                    entry.acked = entry.resolved = True  # the common case, inline: acknowledged in time
                    resolutions.append((entry, ACKNOWLEDGED if entry.group is not None
                                        else Receipt(broker, Position.of(msg))))
                else:
                    self._delivered(entry, err, msg)
            for rid, record, err, msg in sent:
                self._sent(rid, record, err, msg)

    def _delivered(self, entry: Entry, err: KafkaError | None, msg: Message) -> None:
        pending = self.pending
        if err is None:
            entry.acked = True
            if entry.record is not None:
                pending.spool_acks.append(entry.record)
            pending.resolve(entry, Receipt(Durability.BROKER, Position.of(msg)))
            return
        if err.code() in GONE:
            if entry.record is None and not entry.queued:  # queued: it is spooled still
                if pending.renewing:  # its producer failed for good: the spool sends it again
                    entry.resent = True
                    pending.queue(entry)
                    return
                entry.failed = True
                pending.resolve(entry, self.complaints.delivery(msg, err))
            return
        entry.failed = True
        if entry.record is not None:
            pending.spool_fails.append((entry.record, entry.as_record(self.topic), err.str()))
            pending.counts["refused after spooling"] += 1
        pending.resolve(entry, self.complaints.delivery(msg, err))

    def _sent(self, rid: RecordId, record: Record, err: KafkaError | None, msg: Message) -> None:
        pending = self.pending
        if err is not None and err.code() in GONE:
            return  # sent again by the spool (a broker-only append waiting for it goes on waiting)
        waiting = pending.waiting_for.pop(rid, None)
        if err is None:
            pending.spool_acks.append(rid)
            if waiting is not None:
                waiting.acked = True
                pending.resolve(waiting, Receipt(Durability.BROKER, Position.of(msg)))
        else:
            pending.spool_fails.append((rid, record, err.str()))
            if waiting is not None:
                waiting.failed = True
                pending.resolve(waiting, self.complaints.delivery(msg, err))
