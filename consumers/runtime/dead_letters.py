"""The dead-letter topic: what could not be decoded or applied, with the original bytes and why.

A message too large for the dead-letter topic goes there as a record of the failure instead: the
headers saying why and where from, its size and SHA-256, and its first bytes. No message is too large
to be dead-lettered, so none can stop a projector.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from agentlog.deploy import kafka
from agentlog.deploy.credentials import KafkaPrincipal
from agentlog.deploy.settings import Settings
from agentlog.schemas.errors import AgentlogError


class DeadLettersUnacknowledged(AgentlogError):
    """The broker did not take the dead letters in time: an outage, retried by the projector."""

log = logging.getLogger(__name__)

REASON = "agentlog.dlq.reason"
ERROR = "agentlog.dlq.error"
SOURCE_TOPIC = "agentlog.dlq.source.topic"
SOURCE_PARTITION = "agentlog.dlq.source.partition"
SOURCE_OFFSET = "agentlog.dlq.source.offset"
PROJECTION = "agentlog.dlq.projection"
FAILED_AT = "agentlog.dlq.failed_at"
ID = "agentlog.dlq.id"
"""projection/topic/partition/offset: the same for a dead letter sent again after a crash, so readers dedupe."""
TRUNCATED = "agentlog.dlq.truncated"
"""Present on a record of a message too large to be sent whole: its value is the original's first bytes."""
ORIGINAL_SIZE = "agentlog.dlq.original.size"
ORIGINAL_SHA256 = "agentlog.dlq.original.sha256"
ORIGINAL_HEADERS = "agentlog.dlq.original.headers"

CLOCKS_MS = 10 * 60 * 1000
"""How much earlier than the message it is about a letter may be stamped (the clocks of its producer and ours)."""

MAX_LETTER = 512_000
"""Bytes of value and headers sent whole; a larger message goes as a record (well under Kafka's 1 MB default)."""
FIRST_BYTES = 4096


def _bytes(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


def _headers_of(message: Message) -> list[tuple[str, bytes]]:
    headers: Any = message.headers() or []
    return [(str(header[0]), _bytes(header[1])) for header in headers]


class DeadLetters:
    """``send`` buffers a dead letter; ``flush`` returns once the broker has them all (before the store's
    position moves past them)."""

    def __init__(self, settings: Settings, *, projection: str, topic: str | None = None) -> None:
        self.settings = settings
        self.topic = topic or settings.dlq_topic
        self.projection = projection
        self._producer = kafka.producer(settings, principal=KafkaPrincipal.of_projection(projection),
                                        **{"linger.ms": 5})
        self._again: list[tuple[Message, list[tuple[str, bytes]], bool]] = []
        """Letters the broker refused: (original, our headers, send as a record), sent again by ``flush``."""
        self._errors: list[str] = []
        self.sent = 0

    def send(self, message: Message, reason: str, error: BaseException | str) -> None:
        log.warning("dead letter from %s[%d]@%d: %s: %s", message.topic(), message.partition(), message.offset(),
                    reason, str(error)[:500])
        size = len(_bytes(message.value())) + sum(len(k) + len(_bytes(v)) for k, v in _headers_of(message))
        self._produce(message, self._headers(message, reason, error), as_record=size > MAX_LETTER)
        self.sent += 1

    def sent_since(self, message: Message) -> set[tuple[int, int]]:
        """The (partition, offset) of each message of ``message``'s topic this projection has dead-lettered since
        ``message`` was written (less ``CLOCKS_MS``), read from the dead-letter topic.

        Once after any crash, argued: a letter is on the topic before the store's position moves past its
        message (``flush``), so the only letters a projector can send twice are of messages at or after its
        store's position, sent by a process that stopped before the store kept that position (or by a rebuild
        replaying the log). Before the first letter of a partition since its assignment the loop asks this,
        from the first message it must dead-letter: a letter of a later message was written after it. Letters
        are few; the read covers the dead-letter topic since then, not the log."""
        kind, stamp = message.timestamp()
        since = max(0, stamp - CLOCKS_MS) if kind and stamp > 0 else 0
        principal = KafkaPrincipal.of_projection(self.projection)
        found: set[tuple[int, int]] = set()
        ours = self.projection.encode()
        source = (message.topic() or "").encode()
        try:
            start = kafka.offsets_since(self.settings, self.topic, since, principal=principal)
            if not start:
                return found
            for letter in kafka.read_to_end(self.settings, self.topic, list(start), start=start,
                                            principal=principal):
                headers = dict(_headers_of(letter))
                if headers.get(PROJECTION) == ours and headers.get(SOURCE_TOPIC) == source:
                    try:
                        found.add((int(headers[SOURCE_PARTITION]), int(headers[SOURCE_OFFSET])))
                    except (KeyError, ValueError):
                        continue  # not one of ours after all
        except (KafkaException, AgentlogError) as exc:  # no READ on the topic (ACLs of before), or no broker
            log.warning("%s: cannot read the dead letters already sent (%s); a letter sent before a crash may "
                        "be sent again (`agentlog stack up` grants the projection READ on %s)",
                        self.projection, exc, self.topic)
        return found

    def flush(self, timeout: float = 30) -> None:
        """Returns once the broker has every dead letter sent so far. One the broker found too large goes
        again as its record; one it did not take goes again. Raises DeadLettersUnacknowledged when the broker
        still has not taken them all (the projector waits and calls again)."""
        remaining = self._producer.flush(timeout)
        for _ in range(2):
            if not self._again:
                break
            again, self._again = self._again, []
            for message, headers, as_record in again:
                self._produce(message, headers, as_record=as_record)
            remaining = self._producer.flush(timeout)
        if remaining or self._again:
            errors, self._errors = self._errors[-3:], []
            raise DeadLettersUnacknowledged(f"the broker did not take {remaining + len(self._again)} dead letter(s) "
                                            f"for {self.topic}: {'; '.join(errors) or 'timed out'}")

    def _headers(self, message: Message, reason: str, error: BaseException | str) -> list[tuple[str, bytes]]:
        return [
            (REASON, reason.encode()),
            (ERROR, str(error)[:2000].encode()),
            (SOURCE_TOPIC, (message.topic() or "").encode()),
            (SOURCE_PARTITION, str(message.partition()).encode()),
            (SOURCE_OFFSET, str(message.offset()).encode()),
            (PROJECTION, self.projection.encode()),
            (FAILED_AT, datetime.now(UTC).isoformat().encode()),
            (ID, f"{self.projection}/{message.topic()}/{message.partition()}/{message.offset()}".encode()),
        ]

    def _produce(self, message: Message, headers: list[tuple[str, bytes]], *, as_record: bool) -> None:
        """The letter whole (the original's key, bytes and headers, then ours), or its record: our headers,
        the original's size, SHA-256 and header count, and its first bytes."""
        value = _bytes(message.value())
        sent: list[tuple[str, bytes]]
        if as_record:
            key, body = _bytes(message.key())[:FIRST_BYTES], value[:FIRST_BYTES]
            sent = headers + [(TRUNCATED, b"true"), (ORIGINAL_SIZE, str(len(value)).encode()),
                              (ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode()),
                              (ORIGINAL_HEADERS, str(len(_headers_of(message))).encode())]
        else:
            key, body, sent = _bytes(message.key()), value, _headers_of(message) + headers

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._errors.append(err.str())
                self._again.append((message, headers, as_record or err.code() == KafkaError.MSG_SIZE_TOO_LARGE))

        while True:
            try:
                self._producer.produce(self.topic, key=key, value=body, headers=list(sent), on_delivery=delivered)
                return
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:  # refused before sending: larger than the producer takes
                if as_record or exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                self._produce(message, headers, as_record=True)
                return
