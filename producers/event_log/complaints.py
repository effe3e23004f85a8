"""What Kafka says, in words a user can act on: the producer's errors, the broker's refusals of a delivery,
and a refusal of the producer's credentials (then appends fail as a mistake, not an outage)."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, Message

from agentlog.producers.errors import BrokerUnavailable, EventTooLarge, ProducerError
from agentlog.schemas.events import Event

log = logging.getLogger(__name__)

_WARN_EVERY = 10.0
"""Seconds between two warnings of the producer's own errors (a broker away says so every few ms)."""


class Complaints:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.refused: KafkaError | None = None
        """The broker's refusal of our credentials, when it said so."""
        self._last_warning = 0.0

    def on_error(self, err: KafkaError) -> None:
        """The producer's ``error_cb``: a refusal of our credentials is kept; the rest is logged, now and then."""
        if err.code() == KafkaError._AUTHENTICATION:
            self.refused = err  # said once, by the appends it fails
        if self.refused is not None:  # what follows a refusal ("all brokers down") is not news
            log.debug("kafka at %s: %s", self.bootstrap, err.str())
            return
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY:
            self._last_warning = now
            log.warning("kafka at %s: %s", self.bootstrap, err.str())

    def delivery(self, msg: Message, err: KafkaError) -> ProducerError:
        """A delivery the broker refused."""
        key = (msg.key() or b"").decode(errors="replace")
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return EventTooLarge(f"event of conversation {key} ({len(msg.value() or b'')} bytes) is larger than "
                                 f"the broker accepts for topic {self.topic}")
        if self.refused is not None:
            return ProducerError(f"Kafka at {self.bootstrap} refused the producer's credentials "
                                 f"({self.refused.str()}); check AGENTLOG_KAFKA_SASL_USERNAME and _PASSWORD, or "
                                 "`agentlog stack env --role producer` for the local stack's")
        if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return ProducerError(f"Kafka at {self.bootstrap} does not let this producer write "
                                 f"{msg.topic()}: ask its admin for a WRITE ACL, or use the topic it may write")
        if err.code() in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART):
            return ProducerError(f"Kafka at {self.bootstrap} has no topic {msg.topic()}: create it "
                                 "(agentlog stack up makes the local stack's) or set AGENTLOG_EVENTS_TOPIC")
        return ProducerError(f"Kafka at {self.bootstrap} rejected the event of conversation {key}: {err.str()}")

    @staticmethod
    def produce(event: Event, err: KafkaError) -> ProducerError:
        """The producer refused to take an event."""
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return EventTooLarge(f"{event.event_type} event {event.event_id} of conversation {event.conversation_id} "
                                 "is larger than the producer's message.max.bytes")
        return ProducerError(f"cannot send {event.event_type} event {event.event_id}: {err.str()}")

    def not_acknowledged(self, event: Event, timeout: float, spool: object) -> BrokerUnavailable:
        """A broker-only append past its deadline (its event stays in the spool at ``spool``)."""
        return BrokerUnavailable(f"Kafka at {self.bootstrap} did not acknowledge the {event.event_type} event of "
                                 f"conversation {event.conversation_id} within {timeout:.0f}s; it is kept in the "
                                 f"spool at {spool} and sent when the broker answers", taken=True)
