"""The error tree: one root, a short subclass per concept.

What a user sees is ``str(error)``: one line saying what is wrong and what to do.
"""

from __future__ import annotations


class AgentlogError(Exception):
    """Root of every error agentlog raises on purpose."""


class ConfigError(AgentlogError):
    """A setting is missing or malformed."""


class SchemaError(AgentlogError):
    """An event does not fit its Avro schema, or a schema file is broken."""


class UnknownFingerprint(SchemaError):
    """Bytes carry a writer-schema fingerprint that the catalog does not hold."""


class NotSingleObjectEncoded(SchemaError):
    """Bytes do not start with the Avro single-object marker ``C3 01``."""


class IncompatibleSchema(SchemaError):
    """A newer reader schema cannot read data written with an older one."""


class KeyMismatch(SchemaError):
    """A message's Kafka key is not the conversation id of the event it carries."""
