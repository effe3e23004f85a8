"""The event log client (``log``), in the parts it is made of: what an append achieves (``receipts``), the
appends in flight and their futures (``appends``), delivery reports (``deliveries``), the spool thread
(``pump``), the sequence rule (``sequences``) and Kafka's errors in words (``complaints``)."""

from agentlog.producers.event_log.log import EventLog
from agentlog.producers.event_log.receipts import AppendsFailed, Durability, Position, Receipt, Receipts

__all__ = ["AppendsFailed", "Durability", "EventLog", "Position", "Receipt", "Receipts"]
