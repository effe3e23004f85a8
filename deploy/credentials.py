"""Who connects as whom: each service's principals, and the local stack's credentials.

``agentlog stack up`` writes the local stack's credentials once under ``STACK_DIR/secrets`` (the directory
mode 0700, every secret 0600); every agentlog command finds them there, so nothing needs exporting. On an
existing cluster the ``AGENTLOG_*`` variables say it all and this file is not read.
"""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from agentlog.schemas.errors import ConfigError


class PostgresRole(StrEnum):
    """The Postgres roles agentlog connects as; none is a superuser."""

    OWNER = "agentlog"
    """Owns the database: runs the migrations, a rebuild's schema swap, the test sandboxes."""
    DASHBOARD = "agentlog_dashboard"
    """The dashboard projector: writes its tables, nothing else."""
    READER = "agentlog_reader"
    """The dashboard's and the API's reads: SELECT only."""
    SAGA = "agentlog_saga"
    """The saga orchestrator's leases."""
    WEB = "agentlog_web"
    """The dashboard's users, sessions and API tokens."""
    INGEST = "agentlog_ingest"
    """The OTLP ingest: its staged spans, conversation sequences and outbox, nothing else."""
    KEYS = "agentlog_keys"
    """The key store's users (producers, projectors): read data keys and add them; never delete one."""


class SearchUser(StrEnum):
    """The Elasticsearch users agentlog connects as (the local stack's file realm)."""

    ADMIN = "agentlog_admin"
    """Cluster setup, health, the test sandboxes: the ``superuser`` role."""
    WRITER = "agentlog_search"
    """The search projector and its rebuild: every right on ``conversations*``, nothing else."""
    READER = "agentlog_search_reader"
    """The dashboard's and the CLI's searches: read ``conversations*``, nothing else."""


class KafkaPrincipal(StrEnum):
    """The SCRAM users agentlog's Kafka clients authenticate as; each may do only its job (ACLs)."""

    ADMIN = "agentlog_admin"
    """Topics, ACLs, consumer groups: a super user."""
    PRODUCER = "agentlog_producer"
    """The producer SDK (agents, the saga orchestrator, simulate): writes the events topic, nothing else."""
    DASHBOARD = "agentlog_dashboard"
    SEARCH = "agentlog_search"
    ANALYTICS = "agentlog_analytics"
    """The projectors: each reads the events topic in its own consumer group and writes the dead letters."""
    READER = "agentlog_reader"
    """Lag, replay from the log, saga recovery: reads and describes, writes nothing."""

    @classmethod
    def of_projection(cls, name: str) -> "KafkaPrincipal":
        return cls[name.upper()]


PROJECTION_PRINCIPALS = (KafkaPrincipal.DASHBOARD, KafkaPrincipal.SEARCH, KafkaPrincipal.ANALYTICS)

POSTGRES_SUPERUSER = "postgres"
"""The cluster's bootstrap superuser: ``stack up`` alone uses it, to create the roles."""

PRINCIPALS: Mapping[str, tuple[str, ...]] = {
    "postgres": (POSTGRES_SUPERUSER, *(role.value for role in PostgresRole)),
    "elasticsearch": tuple(user.value for user in SearchUser),
    "kafka": tuple(principal.value for principal in KafkaPrincipal),
}
"""Per service, the principals whose passwords the local stack generates."""


def secrets_dir(stack_dir: Path) -> Path:
    return stack_dir / "secrets"


@dataclass(frozen=True)
class LocalCredentials:
    """The local stack's generated secrets (``deploy/local/secrets.py`` makes them)."""

    directory: Path
    passwords: Mapping[str, Mapping[str, str]]

    @property
    def ca(self) -> Path:
        """The stack's certificate authority, which signed every service's certificate."""
        return self.directory / "ca.pem"

    def password(self, service: str, principal: str) -> str:
        try:
            return self.passwords[service][principal]
        except KeyError:
            raise ConfigError(f"the local stack has no password for {service} principal {principal!r}; "
                              "run `agentlog stack up` to make it") from None


_CACHE: dict[Path, tuple[float, LocalCredentials]] = {}


def local(stack_dir: Path) -> LocalCredentials | None:
    """The local stack's credentials, or None before ``stack up`` made them (read again when they change)."""
    directory = secrets_dir(stack_dir)
    path = directory / "credentials.json"
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        passwords = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the local stack's credentials ({exc}); "
                          "`agentlog stack up` writes them again when the file is removed") from exc
    found = LocalCredentials(directory, passwords)
    _CACHE[path] = (mtime, found)
    return found


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", ""})


def on_loopback(address: str) -> bool:
    """Whether ``address`` (``host:port``, a URL or a DSN's host, or a comma-separated list of them) names
    this machine's loopback only: the only place the local stack's credentials are ever sent."""
    hosts = [urlsplit(text if "://" in text else f"tcp://{text}").hostname or ""
             for text in (part.strip() for part in address.split(","))]
    return all(host in LOOPBACK or host.startswith("127.") for host in hosts)


def redact(url: str) -> str:
    """``url`` (a DSN or an HTTP address) with its password replaced by ``***``, for messages and logs."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = quote(parts.username or "", safe="")
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def write_secret(path: Path, data: bytes, *, owner: str | None = None) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (never readable by others, even briefly),
    owned by the user ``owner`` when given (a service that must read it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(temporary, entry.pw_uid, entry.pw_gid)
    os.replace(temporary, path)
