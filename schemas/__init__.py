"""The contract: Avro schemas of every published version, the codec, the event types, the errors."""

from agentlog.schemas.catalog import Catalog, catalog
from agentlog.schemas.codec import Codec
from agentlog.schemas.errors import (
                                     AgentlogError,
                                     IncompatibleSchema,
                                     NotSingleObjectEncoded,
                                     SchemaError,
                                     UnknownFingerprint,
)
from agentlog.schemas.events import Event, EventType

__all__ = [
    "AgentlogError", "Catalog", "Codec", "Event", "EventType", "IncompatibleSchema", "NotSingleObjectEncoded",
    "SchemaError", "UnknownFingerprint", "catalog",
]
