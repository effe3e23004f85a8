"""Who may do what on the broker: the ACLs of the events topic, its dead letters and the projections' groups.

``stack up`` grants them for the log's topics; a test sandbox grants the same for its own. The admin is a
super user and needs none; nothing else is allowed (``allow.everyone.if.no.acl.found=false``).
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from agentlog.deploy import kafka
from agentlog.deploy.credentials import PROJECTION_PRINCIPALS, KafkaPrincipal
from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings

_TOPIC, _GROUP = ResourceType.TOPIC, ResourceType.GROUP
_LITERAL, _PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED


def bindings(settings: Settings) -> list[AclBinding]:
    """The ACLs for ``settings``' events and dead-letter topics."""
    events, letters = settings.events_topic, settings.dlq_topic
    rules: list[tuple[KafkaPrincipal, ResourceType, str, ResourcePatternType, AclOperation]] = [
        (KafkaPrincipal.PRODUCER, _TOPIC, events, _LITERAL, AclOperation.WRITE),
        (KafkaPrincipal.PRODUCER, _TOPIC, events, _LITERAL, AclOperation.DESCRIBE),
        (KafkaPrincipal.READER, _TOPIC, events, _LITERAL, AclOperation.READ),
        (KafkaPrincipal.READER, _TOPIC, events, _LITERAL, AclOperation.DESCRIBE),
        (KafkaPrincipal.READER, _GROUP, "agentlog.", _PREFIXED, AclOperation.DESCRIBE),
    ]
    for principal in PROJECTION_PRINCIPALS:
        group = f"agentlog.{principal.name.lower()}"
        rules += [
            (principal, _TOPIC, events, _LITERAL, AclOperation.READ),
            (principal, _TOPIC, events, _LITERAL, AclOperation.DESCRIBE),
            (principal, _GROUP, group, _PREFIXED, AclOperation.READ),
            (principal, _TOPIC, letters, _LITERAL, AclOperation.WRITE),
            (principal, _TOPIC, letters, _LITERAL, AclOperation.DESCRIBE),
            (principal, _TOPIC, letters, _LITERAL, AclOperation.READ),  # its own letters: none is sent twice
        ]
    return [AclBinding(kind, name, pattern, f"User:{who.value}", "*", operation, AclPermissionType.ALLOW)
            for who, kind, name, pattern, operation in rules]


def grant(settings: Settings, *, wait: float = 15.0) -> None:
    """Create the ACLs of ``settings``' topics (creating one that exists changes nothing), and wait until the
    broker applies them: the controller has them first, and a client let in a moment too early is refused."""
    client = kafka.admin(settings)
    wanted = bindings(settings)
    for binding, future in client.create_acls(wanted, request_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:
            raise StackError(f"kafka: cannot grant {binding}: {exc.args[0].str()}") from exc
    topics = {b.name for b in wanted if b.restype == _TOPIC}
    expected = sum(1 for b in wanted if b.restype == _TOPIC)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        seen = 0
        for name in topics:
            found = client.describe_acls(AclBindingFilter(_TOPIC, name, _LITERAL, None, None,  # type: ignore[arg-type]
                                                          AclOperation.ANY, AclPermissionType.ANY), request_timeout=10).result()
            seen += len(found)
        if seen >= expected:
            return
        time.sleep(0.05)


def revoke(settings: Settings) -> None:
    """Delete the ACLs of ``settings``' topics (a sandbox's, when it is dropped)."""
    client = kafka.admin(settings)
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                                b.permission_type) for b in bindings(settings)
               if b.restype == _TOPIC]
    for future in client.delete_acls(filters, request_timeout=30).values():
        future.result()
