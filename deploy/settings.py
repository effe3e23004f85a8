"""One typed settings object, read once per process from ``AGENTLOG_*`` variables.

Kafka client settings pass through: ``AGENTLOG_KAFKA_SECURITY_PROTOCOL=SASL_SSL``
becomes ``security.protocol=SASL_SSL`` for every producer, consumer and admin client.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from agentlog.deploy import credentials
from agentlog.deploy.credentials import KafkaPrincipal, PostgresRole, SearchUser
from agentlog.schemas.errors import ConfigError

Number = TypeVar("Number", int, float)

EVENTS_TOPIC = "agent.events"
DLQ_TOPIC = "agent.events.dlq"

LOCAL_POSTGRES = "postgresql://agentlog@127.0.0.1:5432/agentlog"
_KAFKA_LOG = logging.getLogger("agentlog.kafka")
_KAFKA_PREFIX = "AGENTLOG_KAFKA_"
_KAFKA_OWN = {"AGENTLOG_KAFKA_BOOTSTRAP", "AGENTLOG_KAFKA_PARTITIONS"}


@dataclass(frozen=True)
class Settings:
    stack_dir: Path
    cache_dir: Path
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_client: Mapping[str, str] = field(default_factory=dict)
    postgres_dsn: str = ""
    """``AGENTLOG_POSTGRES_DSN``, for every role; empty: the local stack's (``postgres_dsn_for``)."""
    postgres_role_dsns: Mapping[str, str] = field(default_factory=dict)
    """``AGENTLOG_POSTGRES_DSN_<ROLE>`` (OWNER, DASHBOARD, READER, SAGA, WEB, INGEST): one role's own DSN."""
    elasticsearch_url: str = "https://127.0.0.1:9200"
    elasticsearch_user: str = ""
    """``AGENTLOG_ELASTICSEARCH_USER`` and ``_PASSWORD``, for every use; empty: the local stack's users."""
    elasticsearch_password: str = field(default="", repr=False)
    elasticsearch_api_key: str = field(default="", repr=False)
    """``AGENTLOG_ELASTICSEARCH_API_KEY`` (a cluster with API keys), instead of a user and password."""
    elasticsearch_ca: str = ""
    """``AGENTLOG_ELASTICSEARCH_CA``: the CA file that signed the cluster's certificate; empty: the system's."""
    clickhouse_url: str = ""
    clickhouse_analyst_url: str = ""
    """The SQL box's ClickHouse server user (a read-only profile); empty: ``clickhouse_url``'s."""
    events_topic: str = EVENTS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    partitions: int = 6
    postgres_schema: str = "public"
    metrics_token: str = field(default="", repr=False)
    """``AGENTLOG_METRICS_TOKEN``: what Prometheus must send to ``agentlog project --metrics-port``."""
    auth_schema: str = "agentlog_auth"
    """Where the dashboard's users, tokens and sessions live (``AGENTLOG_AUTH_SCHEMA``)."""
    ingest_schema: str = "agentlog_ingest"
    """Where the OTLP ingest stages spans and orders them into events (``AGENTLOG_INGEST_SCHEMA``)."""
    subject_attributes: tuple[str, ...] = ("user.id", "enduser.id")
    """The span or resource attributes the OTLP ingest takes a conversation's subject from, the first found
    (``AGENTLOG_SUBJECT_ATTRIBUTES``, comma-separated)."""
    keys_schema: str = "agentlog_keys"
    """Where the data keys of the events' sealed text live (``AGENTLOG_KEYS_SCHEMA``)."""
    master_key_file: Path | None = None
    """``AGENTLOG_MASTER_KEY_FILE``: the 32 bytes that wrap every data key (``agentlog stack up`` makes the
    local stack's, mode 0600). The events' text is sealed when this file exists; ``AGENTLOG_ENCRYPTION=off``
    writes it in the clear."""
    encryption: bool = True
    search_alias: str = "conversations"
    search_shards: int = 1
    """``AGENTLOG_SEARCH_SHARDS``: primary shards of a conversations index made from now on (a rebuild makes
    one: ``agentlog rebuild search`` re-shards a live index)."""
    clickhouse_database: str = "default"
    batch_size: int = 5000
    sql_timeout: float = 30.0
    """Seconds an analyst's query may run (``AGENTLOG_SQL_TIMEOUT``)."""
    sql_memory: int = 1 << 30
    """Bytes of memory an analyst's query may take (``AGENTLOG_SQL_MEMORY``)."""
    sql_rows: int = 10_000
    """Rows an analyst's query may return (``AGENTLOG_SQL_ROWS``, at least 2,000)."""
    sql_bytes: int = 64 << 20
    """Bytes of result an analyst's query may return (``AGENTLOG_SQL_BYTES``)."""
    spool_dir: Path = field(default_factory=lambda: _data_home(os.environ) / "agentlog" / "spool")
    """``AGENTLOG_SPOOL_DIR``: where the producer SDK keeps what the broker has not acknowledged in time."""
    spool_max_bytes: int = 1 << 30
    """``AGENTLOG_SPOOL_MAX_BYTES``: how much the spool may hold before appends fail."""
    stack_nodes: int = 1
    """``AGENTLOG_STACK_NODES`` (``stack up --nodes``): 1, or 3 for a local cluster of Kafka and Elasticsearch;
    unset, what the stack directory was made with."""

    @property
    def elasticsearch_hosts(self) -> list[str]:
        """Every node of ``AGENTLOG_ELASTICSEARCH_URL`` (comma-separated): the client fails over between them."""
        return [url.strip().rstrip("/") for url in self.elasticsearch_url.split(",") if url.strip()]

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url.startswith("chdb://")

    def postgres_dsn_for(self, role: PostgresRole = PostgresRole.OWNER) -> str:
        """The DSN to connect as ``role``: its own variable, else ``AGENTLOG_POSTGRES_DSN``, else the local stack's.

        A DSN without a password, on a machine whose local stack has credentials, gets the role's user,
        password and the stack's CA (``sslmode=verify-full``): the local stack needs nothing exported.
        """
        given = self.postgres_role_dsns.get(role.name) or self.postgres_dsn or LOCAL_POSTGRES
        try:
            params = conninfo_to_dict(given)
        except psycopg.ProgrammingError:
            raise ConfigError(f"postgres: the DSN for role {role.value} is not a valid DSN; give "
                              "postgresql://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full") from None
        if params.get("password") or not credentials.on_loopback(str(params.get("host", ""))):
            return given
        found = credentials.local(self.stack_dir)
        if found is None:
            return given
        params.update(user=role.value, password=found.password("postgres", role.value), sslmode="verify-full",
                      sslrootcert=str(found.ca))
        return make_conninfo(**{k: str(v) for k, v in params.items()})

    def elasticsearch_auth(self, user: SearchUser) -> dict[str, Any]:
        """The client's credentials and CA to connect as ``user``: the configured ones, else the local stack's."""
        found = credentials.local(self.stack_dir) if credentials.on_loopback(self.elasticsearch_url) else None
        auth: dict[str, Any] = {}
        if self.elasticsearch_api_key:
            auth["api_key"] = self.elasticsearch_api_key
        elif self.elasticsearch_user:
            auth["basic_auth"] = (self.elasticsearch_user, self.elasticsearch_password)
        elif found is not None:
            auth["basic_auth"] = (user.value, found.password("elasticsearch", user.value))
        if self.elasticsearch_ca:
            auth["ca_certs"] = self.elasticsearch_ca
        elif found is not None and self.elasticsearch_url.startswith("https://"):
            auth["ca_certs"] = str(found.ca)
        return auth

    def kafka_config(self, principal: KafkaPrincipal = KafkaPrincipal.ADMIN, **overrides: object) -> dict[str, object]:
        """librdkafka configuration: bootstrap, security, overrides. The security is the ``AGENTLOG_KAFKA_*``
        settings when they name a protocol, else the local stack's SASL_SSL as ``principal``."""
        config: dict[str, object] = {"bootstrap.servers": self.kafka_bootstrap, "logger": _KAFKA_LOG}
        found = None if "security.protocol" in self.kafka_client or not credentials.on_loopback(
            self.kafka_bootstrap) else credentials.local(self.stack_dir)
        if found is not None and "kafka" in found.passwords:
            config.update({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                           "sasl.username": principal.value,
                           "sasl.password": found.password("kafka", principal.value),
                           "ssl.ca.location": str(found.ca)})
        config.update(self.kafka_client)
        config.update(overrides)
        return config

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        stack_dir = Path(env.get("AGENTLOG_STACK_DIR", ".stack")).absolute()
        cache_home = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        nodes = stack_nodes(env, stack_dir)
        kafka_client = {
            name[len(_KAFKA_PREFIX):].lower().replace("_", "."): value
            for name, value in env.items()
            if name.startswith(_KAFKA_PREFIX) and name not in _KAFKA_OWN
        }
        return cls(
            stack_dir=stack_dir,
            cache_dir=Path(env.get("AGENTLOG_CACHE_DIR", cache_home / "agentlog")),
            kafka_bootstrap=cluster_addresses(env.get("AGENTLOG_KAFKA_BOOTSTRAP", cls.kafka_bootstrap), nodes,
                                              KAFKA_PORT_STEP),
            kafka_client=kafka_client,
            postgres_dsn=env.get("AGENTLOG_POSTGRES_DSN", cls.postgres_dsn),
            postgres_role_dsns={role.name: env[f"AGENTLOG_POSTGRES_DSN_{role.name}"] for role in PostgresRole
                                if env.get(f"AGENTLOG_POSTGRES_DSN_{role.name}")},
            elasticsearch_url=cluster_addresses(env.get("AGENTLOG_ELASTICSEARCH_URL", cls.elasticsearch_url).rstrip("/"),
                                                nodes, 1),
            elasticsearch_user=env.get("AGENTLOG_ELASTICSEARCH_USER", ""),
            elasticsearch_password=env.get("AGENTLOG_ELASTICSEARCH_PASSWORD", ""),
            elasticsearch_api_key=env.get("AGENTLOG_ELASTICSEARCH_API_KEY", ""),
            elasticsearch_ca=env.get("AGENTLOG_ELASTICSEARCH_CA", ""),
            clickhouse_url=env.get("AGENTLOG_CLICKHOUSE_URL", f"chdb://{stack_dir / 'clickhouse'}"),
            clickhouse_analyst_url=env.get("AGENTLOG_CLICKHOUSE_ANALYST_URL", ""),
            partitions=_number(env, "AGENTLOG_KAFKA_PARTITIONS", cls.partitions, int),
            events_topic=env.get("AGENTLOG_EVENTS_TOPIC", cls.events_topic),
            dlq_topic=env.get("AGENTLOG_DLQ_TOPIC", cls.dlq_topic),
            postgres_schema=env.get("AGENTLOG_POSTGRES_SCHEMA", cls.postgres_schema),
            auth_schema=env.get("AGENTLOG_AUTH_SCHEMA", cls.auth_schema),
            ingest_schema=env.get("AGENTLOG_INGEST_SCHEMA", cls.ingest_schema),
            subject_attributes=_names(env, "AGENTLOG_SUBJECT_ATTRIBUTES", cls.subject_attributes),
            keys_schema=env.get("AGENTLOG_KEYS_SCHEMA", cls.keys_schema),
            master_key_file=Path(env.get("AGENTLOG_MASTER_KEY_FILE") or stack_dir / "secrets" / "master.key"),
            encryption=_switch(env, "AGENTLOG_ENCRYPTION"),
            metrics_token=env.get("AGENTLOG_METRICS_TOKEN", ""),
            search_alias=env.get("AGENTLOG_SEARCH_ALIAS", cls.search_alias),
            search_shards=_number(env, "AGENTLOG_SEARCH_SHARDS", cls.search_shards, int),
            clickhouse_database=env.get("AGENTLOG_CLICKHOUSE_DATABASE", cls.clickhouse_database),
            batch_size=_number(env, "AGENTLOG_BATCH_SIZE", cls.batch_size, int),
            sql_timeout=_number(env, "AGENTLOG_SQL_TIMEOUT", cls.sql_timeout, float),
            sql_memory=_number(env, "AGENTLOG_SQL_MEMORY", cls.sql_memory, int),
            sql_rows=max(2_000, _number(env, "AGENTLOG_SQL_ROWS", cls.sql_rows, int)),
            sql_bytes=_number(env, "AGENTLOG_SQL_BYTES", cls.sql_bytes, int),
            spool_dir=Path(env.get("AGENTLOG_SPOOL_DIR") or _data_home(env) / "agentlog" / "spool").absolute(),
            spool_max_bytes=_number(env, "AGENTLOG_SPOOL_MAX_BYTES", cls.spool_max_bytes, int),
            stack_nodes=nodes,
        )


NODE_COUNTS = (1, 3)
"""What the local stack runs: one node of each service, or a cluster of three Kafka brokers and three
Elasticsearch nodes (all master-eligible, so any one may go)."""
KAFKA_PORT_STEP = 2
"""A local Kafka node listens on its port and the next (its controller): the next node is two ports on."""


def recorded_nodes(stack_dir: Path) -> int | None:
    """The node count a stack directory was made with (its ``nodes`` file); None: not made yet. A directory
    from before clusters existed, with a broker in it, is one-node."""
    try:
        return int((stack_dir / "nodes").read_text().strip())
    except (FileNotFoundError, ValueError):
        return 1 if (stack_dir / "kafka" / "data").exists() else None


def node_count(text: str, name: str) -> int:
    """``text`` as a node count of the local stack; ConfigError naming ``name`` otherwise."""
    if text.strip() not in {str(n) for n in NODE_COUNTS}:
        raise ConfigError(f"{name}={text!r}: the local stack runs 1 node or a cluster of 3; give 1 or 3")
    return int(text)


def stack_nodes(env: Mapping[str, str], stack_dir: Path) -> int:
    given = env.get("AGENTLOG_STACK_NODES")
    if given is not None:
        return node_count(given, "AGENTLOG_STACK_NODES")
    return recorded_nodes(stack_dir) or 1


def cluster_addresses(first: str, nodes: int, step: int) -> str:
    """One loopback address of a local cluster -> every node's (``step`` ports apart), comma-separated; a list,
    a remote address or a one-node stack stays as given."""
    if nodes == 1 or "," in first or not credentials.on_loopback(first):
        return first
    scheme, _, rest = first.rpartition("://")
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        return first
    prefix = f"{scheme}://" if scheme else ""
    return ",".join(f"{prefix}{host}:{int(port) + step * index}" for index in range(nodes))


def _switch(env: Mapping[str, str], name: str) -> bool:
    text = env.get(name, "on").strip().lower()
    if text not in ("on", "off"):
        raise ConfigError(f"{name}={text!r}: must be on or off")
    return text == "on"


def _names(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated names from the environment; ConfigError naming the variable when none is given."""
    text = env.get(name)
    if text is None:
        return default
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names or any(len(each) > 256 for each in names):
        raise ConfigError(f"{name}={text[:80]!r}: give one or more attribute names, comma-separated "
                          f"(for example {','.join(default)})")
    return names


def _data_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def _number(env: Mapping[str, str], name: str, default: Number, kind: Callable[[str], Number]) -> Number:
    """A positive number from the environment; ConfigError naming the variable otherwise."""
    text = env.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = kind("0")
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name}={text!r}: must be a positive number, like {default}")
    return value


@functools.cache
def settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()
