"""The three read models as their users ask them: one object shared by the command line and the web API.

``agentlog metrics --json`` and ``GET /api/metrics`` call the same method, so they give the same
numbers for the same data. A store that does not answer is a ``StoreUnavailable`` naming it.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Iterator

import psycopg
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch

from agentlog.consumers.operations.compare import compare as compare_runs
from agentlog.consumers.operations.replay import UnknownConversation, events_from_archive, events_from_kafka
from agentlog.consumers.runtime.lag import lag as projection_lag
from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole, SearchUser
from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.producers.spool.status import status as spool_status
from agentlog.projections.base import Positions, Projection, StoreUnavailable
from agentlog.projections.fold import fold
from agentlog.projections.reads import MAX_CHARACTERS, BadQuery, connect
from agentlog.projections.reads import charts as analytics_charts
from agentlog.projections.reads import dashboard as dashboard_queries
from agentlog.projections.reads import search as search_conversations
from agentlog.projections.reads import sql as analytics_queries
from agentlog.projections.registry import NAMES, build
from agentlog.schemas.errors import AgentlogError
from agentlog.schemas.events import CONTROL, Event

log = logging.getLogger(__name__)

_LAG_TTL = 2.0


def event_json(event: Event) -> dict[str, Any]:
    return {"sequence_number": event.sequence_number, "event_type": event.event_type.value,
            "event_id": event.event_id, "occurred_at": event.occurred_at.isoformat(),
            "agent_name": event.agent_name, "payload": dict(event.payload)}


class BadRequest(AgentlogError):
    """A value the asker sent that no store can take."""


def as_it_was(conversation_id: str, events: list[Event], *, at: int | None = None,
              as_of: str | None = None) -> list[Event]:
    """The conversation's events up to step ``at``, or up to the time ``as_of``; BadRequest for a step it does
    not have, a time that is not one, or a time before it began."""
    if at is not None and as_of is not None:
        raise BadRequest("ask for one of a step (at) and a time (as_of), not both")
    steps = [e for e in events if e.event_type not in CONTROL]
    last = max((e.sequence_number for e in steps), default=0)
    if at is not None:
        if type(at) is not int or not 1 <= at <= last:
            raise BadRequest(f"conversation {conversation_id!r} has steps 1 to {last}; at must be one of them, "
                             f"not {at!r}")
        return [e for e in events if e.sequence_number <= at]
    if as_of is not None:
        plain("as_of", as_of, most=64)
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            raise BadRequest(f"as_of {as_of!r:.70} is not a time: give one in ISO 8601, as 2026-12-07T10:00:00Z") \
                from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        kept = [e for e in steps if e.occurred_at <= moment]
        if not kept:
            first = min(e.occurred_at for e in steps).isoformat() if steps else "never"
            raise BadRequest(f"conversation {conversation_id!r} began at {first}, after {as_of!r:.70}")
        return [e for e in events if e.sequence_number <= max(e.sequence_number for e in kept)]
    return events


def plain(name: str, value: str | None, *, most: int) -> None:
    """BadRequest unless ``value`` is text a store can take: no NUL, at most ``most`` characters."""
    if value is None:
        return
    if "\x00" in value:
        raise BadRequest(f"{name} holds a NUL character")
    if len(value) > most:
        raise BadRequest(f"{name} has {len(value):,} characters; at most {most:,}")


def _reason(exc: ApiError) -> str:
    try:
        causes = exc.body["error"]["root_cause"]
        return str(causes[0].get("reason", exc.message))[:200]
    except (KeyError, IndexError, TypeError):
        return str(exc.message)[:200]


class NotProjected(StoreUnavailable):
    """A read model that no projector has set up yet."""


class ReadModels:
    """Postgres for operators, Elasticsearch for support staff, ClickHouse for analysts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._es: Elasticsearch | None = None
        self._box = analytics_queries.SQLBox(settings)
        self._stores: dict[str, Projection] = {}
        """The projections lag asks for their positions, kept between asks (a connection each)."""
        self._lag: tuple[float, dict[str, dict[str, int]]] | None = None
        self._lag_lock = threading.Lock()

    # -- Postgres: the dashboard -------------------------------------------------------------------------------

    def metrics(self, since: str = "24h") -> list[dict[str, Any]]:
        """The agents' figures over the last ``since`` (30m, 24h, 7d)."""
        interval = dashboard_queries.interval(since)
        with self._postgres() as conn:
            return dashboard_queries.agent_metrics(conn, interval)

    def counters(self) -> dict[str, Any]:
        """Totals over every conversation: by status, events, tools, handoffs, failures, tokens and cost."""
        with self._postgres() as conn:
            return dashboard_queries.counters(conn)

    def conversations(self, *, status: str | None = None, agent: str | None = None, limit: int = 50,
                      before: str | None = None) -> list[dict[str, Any]]:
        """The newest first; ``before``: the cursor (``started_at|id``) of the last row of the previous page."""
        for name, value in (("status", status), ("agent", agent), ("before", before)):
            plain(name, value, most=600)
        after = dashboard_queries.cursor(before) if before else None
        with self._postgres() as conn:
            return dashboard_queries.conversations(conn, status=status or None, agent=agent or None, limit=limit,
                                                   before=after)

    def agents(self) -> list[str]:
        with self._postgres() as conn:
            return dashboard_queries.agents(conn)

    def conversation(self, conversation_id: str, *, at: int | None = None,
                     as_of: str | None = None) -> dict[str, Any]:
        """The replayed state and the timeline: from the Postgres archive, else from the log itself. ``at``: as
        it was after that step; ``as_of``: after the last step that happened by then (an ISO 8601 time). The
        fold is the stores' own, so either is what a projector holds after exactly those events."""
        every = self.events(conversation_id)
        events = as_it_was(conversation_id, every, at=at, as_of=as_of)
        return {"state": fold(conversation_id, events).as_dict(), "events": [event_json(e) for e in events],
                "steps": max((e.sequence_number for e in every if e.event_type not in CONTROL), default=0),
                "forks": self.forks(conversation_id)}

    def compare(self, a: str, b: str) -> dict[str, Any]:
        """Two runs side by side (``operations.compare``): a fork and its source, or any two."""
        return compare_runs(a, self.events(a), b, self.events(b))

    def forks(self, conversation_id: str) -> list[dict[str, Any]]:
        """The conversations forked from this one, as the dashboard's views know them (none when the dashboard
        cannot be asked: the conversation itself may still be read from the log)."""
        plain("conversation id", conversation_id, most=256)
        try:
            with self._postgres() as conn:
                found = dashboard_queries.forks_of(conn, conversation_id)
        except (NotProjected, StoreUnavailable):
            return []
        return [{**f, "started_at": f["started_at"].isoformat() if f["started_at"] else None} for f in found]

    def events(self, conversation_id: str) -> list[Event]:
        plain("conversation id", conversation_id, most=256)
        events = events_from_archive(self.settings, conversation_id) or events_from_kafka(self.settings,
                                                                                          conversation_id)
        if not events:
            raise UnknownConversation(f"no conversation {conversation_id!r} in the log; "
                                      "list some with `agentlog search '*'` or create some with `agentlog simulate`")
        return events

    @contextmanager
    def _postgres(self) -> Iterator[psycopg.Connection]:
        """A dashboard connection; its errors as a user reads them."""
        with connect(self.settings, role=PostgresRole.READER) as conn:
            try:
                yield conn
            except psycopg.errors.UndefinedTable as exc:
                raise NotProjected(f"the dashboard has no tables in schema {self.settings.postgres_schema!r} yet: "
                                   "run `agentlog serve` or `agentlog project`") from exc
            except psycopg.errors.UndefinedColumn as exc:
                raise NotProjected(f"the dashboard's tables in schema {self.settings.postgres_schema!r} are older "
                                   "than this agentlog: `agentlog serve` or `agentlog project` migrates them") from exc
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"postgres: {str(exc).strip().splitlines()[0]}") from exc
            except psycopg.DataError as exc:  # a value Postgres cannot take: the asker's mistake, not an outage
                raise BadRequest(f"postgres cannot take that value: {str(exc).strip().splitlines()[0]}") from exc

    # -- Elasticsearch: support staff's search -----------------------------------------------------------------

    def search(self, query: str, *, agent: str | None = None, status: str | None = None, since: str | None = None,
               limit: int = 20, forked_from: str | None = None) -> dict[str, Any]:
        for name, value in (("query", query), ("agent", agent), ("status", status), ("since", since),
                            ("forked_from", forked_from)):
            plain(name, value, most=MAX_CHARACTERS)
        if self._es is None:
            self._es = clients.elasticsearch(self.settings, user=SearchUser.READER)
        try:
            return search_conversations(self._es, query, agent=agent or None, status=status or None,
                                        since=since or None, size=limit, index=self.settings.search_alias,
                                        forked_from=forked_from or None)
        except ApiError as exc:
            if exc.meta.status == 404:
                return {"total": 0, "hits": []}  # no index yet: nothing has been projected
            if exc.meta.status == 400:  # Elasticsearch could not take the query: the asker's to change
                raise BadQuery(f"elasticsearch cannot run that search: {_reason(exc)}") from exc
            if exc.meta.status in (401, 403):  # the server's configuration, not the asker's mistake
                raise StackError(f"elasticsearch at {self.settings.elasticsearch_url} refuses the search reader "
                                 f"({exc.meta.status}): check AGENTLOG_ELASTICSEARCH_USER and _PASSWORD, or "
                                 "`agentlog stack env --role reader` for the local stack's") from exc
            raise StoreUnavailable(f"elasticsearch at {self.settings.elasticsearch_url}: {exc.message}") from exc
        except TransportError as exc:
            raise StoreUnavailable(f"elasticsearch: nothing answers at {self.settings.elasticsearch_url}; "
                                   "run `agentlog stack up`") from exc

    # -- ClickHouse: analysts' SQL -----------------------------------------------------------------------------

    def sql(self, statement: str) -> list[dict[str, Any]]:
        """A statement in the SQL box (the embedded store's engine admits and runs it, behind its walls)."""
        return analytics_queries.run(self.settings, statement, box=self._box)

    def sql_file(self, statement: str, kind: str) -> bytes:
        """A statement's result as a file (csv, parquet or jsonl), written by the engine within the box's limits."""
        return self._box.export(statement, kind)

    def charts(self) -> dict[str, Any]:
        """The analytics page's charts: tool calls over time, failures by type, tokens and cost by model."""
        return analytics_charts(self.sql)

    # -- Kafka: how far behind each projection is --------------------------------------------------------------

    def spool(self) -> dict[str, Any]:
        """What the producer SDK's spool on this machine holds (``agentlog spool status --json``)."""
        try:
            return spool_status(self.settings.spool_dir).as_json()
        except OSError as exc:
            raise StoreUnavailable(f"cannot read the spool at {self.settings.spool_dir} ({exc.strerror}): give this "
                                   "process AGENTLOG_SPOOL_DIR of the agents on this machine, readable by it") from None

    def lag(self, *, fresh: bool = False) -> dict[str, dict[str, int]]:
        """Per projection, per partition: events still to apply, counted from the store's own positions
        (asked of the broker and the stores at most every 2 s)."""
        with self._lag_lock:
            if fresh or self._lag is None or time.monotonic() - self._lag[0] > _LAG_TTL:
                result = projection_lag(self.settings, list(NAMES), stored=self.positions())
                self._lag = (time.monotonic(),
                             {name: {str(p): n for p, n in sorted(parts.items())} for name, parts in result.items()})
            return self._lag[1]

    def positions(self) -> dict[str, Positions | None]:
        """Per projection, the next offset per partition as its store says (None: the store cannot say now; the
        consumer group's committed offsets stand in)."""
        partitions = list(range(self.settings.partitions))
        topic = self.settings.events_topic
        found: dict[str, Positions | None] = {}
        for name in NAMES:
            try:
                store = self._stores.get(name) or self._stores.setdefault(name, build(name, self.settings))
                found[name] = store.positions(topic, partitions)
            except Exception as exc:  # noqa: BLE001 -- any store that cannot say: the committed offsets stand in
                log.debug("lag: %s cannot say its positions (%s)", name, exc)
                found[name] = None
        return found

    def close(self) -> None:
        if self._es is not None:
            self._es.close()
        for store in self._stores.values():
            store.close()
        self._stores.clear()
