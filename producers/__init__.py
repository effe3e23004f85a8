"""The agent-side SDK: append events, record conversations and tool calls, run sagas."""

from agentlog.producers.conversation import Conversation, ToolCall
from agentlog.producers.errors import BrokerUnavailable, EventTooLarge, NotSerializable, ProducerError, SequenceError
from agentlog.producers.event_log import EventLog, Position
from agentlog.producers.sync import SyncConversation, SyncEventLog
from agentlog.producers.tools import tool

__all__ = [
    "BrokerUnavailable", "Conversation", "EventLog", "EventTooLarge", "NotSerializable", "Position",
    "ProducerError", "SequenceError", "SyncConversation", "SyncEventLog", "ToolCall", "tool",
]
