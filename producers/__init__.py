"""The agent-side SDK: append events, record conversations and tool calls, run sagas."""

from agentlog.producers.errors import BrokerUnavailable, EventTooLarge, NotSerializable, ProducerError, SequenceError
from agentlog.producers.event_log import AppendsFailed, Durability, EventLog, Position, Receipt, Receipts
from agentlog.producers.fork import ForkRefused
from agentlog.producers.recorder import Conversation, ToolCall
from agentlog.producers.rerun import NotRecorded, RecordedToolError, Rerun, rerun
from agentlog.producers.spool import SpoolFull
from agentlog.producers.sync import SyncConversation, SyncEventLog
from agentlog.producers.tools import tool

__all__ = [
    "AppendsFailed", "BrokerUnavailable", "Conversation", "Durability", "EventLog", "EventTooLarge", "ForkRefused",
    "NotRecorded", "NotSerializable", "Position", "ProducerError", "Receipt", "Receipts", "RecordedToolError", "Rerun",
    "SequenceError", "SpoolFull", "SyncConversation", "SyncEventLog", "ToolCall", "rerun", "tool",
]
