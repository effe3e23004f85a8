"""The key store: one data key per conversation, in Postgres, each wrapped by the master key.

A data key is 32 random bytes, made the first time a conversation's text is sealed
(``schemas.sealing``). Postgres keeps it wrapped (AES-256-GCM under the master key, the key id as
associated data) beside the conversation and its subject. The master key is 32 bytes in
``AGENTLOG_MASTER_KEY_FILE`` (mode 0600; ``agentlog stack up`` makes the local stack's); a KMS can take
its place behind ``MasterKey``'s two methods. Forgetting deletes data keys: what they sealed in the log
can then never be read again.

The producers and projectors connect as the KEYS role (read and add keys, never delete); ``forget``
deletes as the owner. A store that is down is a StoreUnavailable, which the projectors retry and a
producer reports as the outage it is.
"""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.errors import StackError
from agentlog.deploy.settings import Settings
from agentlog.schemas.errors import ConfigError
from agentlog.schemas.events import Event, EventType
from agentlog.schemas.sealing import KEY_BYTES, NONCE, new_key, open_sealed

DDL = """
CREATE TABLE IF NOT EXISTS data_keys (
    key_id           uuid        PRIMARY KEY,
    conversation_id  text        NOT NULL UNIQUE,
    subject_id       text,
    wrapped          bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS data_keys_subject ON data_keys (subject_id);
CREATE TABLE IF NOT EXISTS forgotten_keys (
    key_id           uuid        PRIMARY KEY,
    conversation_id  text        NOT NULL,
    subject_id       text,
    forgotten_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS forgotten_keys_subject ON forgotten_keys (subject_id);
CREATE INDEX IF NOT EXISTS forgotten_keys_conversation ON forgotten_keys (conversation_id);
"""
"""``forgotten_keys``: which keys were deleted, of whom (no key material): a ``forget`` that stopped after
deleting the keys (the broker away) is run again and finds what it has still to announce. The owner's
alone."""
PRODUCER_CACHE_SECONDS = 30.0
"""How long a producer uses a conversation's key before asking the store again: an event sealed under a key
deleted meanwhile reads as erased, so this is how long text written after a ``forget`` may be lost. While
the store is away, a key it gave goes on being used; a conversation it gave none cannot be begun."""
T = TypeVar("T")
CACHED = 100_000
"""Keys a process keeps in memory."""


class KeyStoreUnavailable(StackError):
    """The key store (Postgres) is down or refused: no text can be sealed or opened until it is back."""


class MasterKey:
    """Wraps and unwraps data keys; the local one is a file of 32 bytes."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"the master key must be {KEY_BYTES} bytes; it has {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path) -> "MasterKey":
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the master key ({exc.strerror}); set AGENTLOG_MASTER_KEY_FILE "
                              "or run `agentlog stack up`") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path}: the master key is readable by others (mode {stat.S_IMODE(mode):o}); "
                              f"chmod 600 {path}")
        return cls(data)

    def wrap(self, key_id: str, key: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, key, key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE], wrapped[NONCE:], key_id.encode())
        except InvalidTag:
            raise ConfigError(f"data key {key_id} does not unwrap with this master key: is "
                              "AGENTLOG_MASTER_KEY_FILE the one the keys were made with?") from None


def make_master_key(path: Path) -> bool:
    """Write a new master key at ``path`` (mode 0600 from the first byte) unless one is there; True if made."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(new_key())
        out.flush()
        os.fsync(out.fileno())
    os.link(temporary, path)  # never replaces a key made meanwhile
    temporary.unlink()
    return True


def create(settings: Settings) -> None:
    """The key store's schema and table, made by their owner; the KEYS role may read and add keys."""
    with clients.postgres(settings, role=PostgresRole.OWNER, schema=settings.keys_schema) as conn, \
            conn.transaction():
        schema = sql.Identifier(settings.keys_schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
        conn.execute(DDL)
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PostgresRole.KEYS.value,)).fetchone():
            role = sql.Identifier(PostgresRole.KEYS.value)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE (subject_id) ON data_keys TO {}").format(role))


def enabled(settings: Settings) -> bool:
    """Whether text is sealed: encryption on and a master key configured."""
    return settings.encryption and settings.master_key_file is not None and settings.master_key_file.exists()


@dataclass(frozen=True, slots=True)
class _Cached:
    """A conversation's key as this process holds it: fetched at ``at``, with the subject the store has on it."""

    key_id: str
    key: bytes
    at: float
    subject: str | None


@dataclass
class Forgotten:
    key_ids: list[str]
    """Every key of the subject (or conversation) ever deleted, this time's and earlier ones'."""
    conversations: list[str]
    deleted: int = 0
    """The keys this call deleted."""


class KeyStore:
    """The data keys, cached (``ttl``: seconds a cached key is trusted before the store is asked again; None:
    for as long as the process runs, which suits readers, who evict a key when its forgetting comes by)."""

    def __init__(self, settings: Settings, *, master: MasterKey | None = None, ttl: float | None = None) -> None:
        if master is None and settings.master_key_file is None:
            raise ConfigError("no master key: set AGENTLOG_MASTER_KEY_FILE")
        self.settings = settings
        self.master = master or MasterKey.from_file(settings.master_key_file)  # type: ignore[arg-type]
        self.ttl = ttl
        self._by_conversation: OrderedDict[str, _Cached] = OrderedDict()
        self._by_id: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None

    # -- the Keys protocol of schemas.sealing ---------------------------------------------------------------

    def key_for(self, conversation_id: str, subject_id: str | None) -> tuple[str, bytes]:
        now = time.monotonic()
        with self._lock:
            cached = self._by_conversation.get(conversation_id)
            if cached is not None and self._fresh(cached, now, subject_id):
                return cached.key_id, cached.key
        try:
            key_id, key, subject = self._fetch_or_make(conversation_id, subject_id)
        except KeyStoreUnavailable:
            if cached is None:  # a new conversation cannot be sealed: the append fails, as the outage it is
                raise
            return cached.key_id, cached.key  # the store is away: the key it gave goes on being used
        with self._lock:
            self._by_conversation[conversation_id] = _Cached(key_id, key, now, subject)
            self._by_id[key_id] = key
            self._trim()
        return key_id, key

    def _fresh(self, cached: "_Cached", now: float, subject_id: str | None) -> bool:
        """A cached key serves unless it is older than the ttl, or a subject is named that the store has not
        recorded on it yet (a subject that first appears mid-conversation reaches the store at once)."""
        return (self.ttl is None or now - cached.at < self.ttl) and (subject_id is None or cached.subject is not None)

    def prepare(self, conversations: Iterable[tuple[str, str | None]]) -> None:
        """The keys of the conversations not cached (or cached too long, or named a subject the store has not
        recorded), fetched or made in one statement."""
        now = time.monotonic()
        wanted: dict[str, str | None] = {}
        with self._lock:
            for cid, subject in conversations:
                cached = self._by_conversation.get(cid)
                if cached is None or not self._fresh(cached, now, subject):
                    if wanted.get(cid) is None:
                        wanted[cid] = subject
        if not wanted:
            return
        made = {cid: (str(uuid.uuid4()), new_key()) for cid in wanted}
        try:
            rows = self._run(lambda conn: conn.execute(
                "INSERT INTO data_keys (key_id, conversation_id, subject_id, wrapped) SELECT * FROM "
                "unnest(%s::uuid[], %s::text[], %s::text[], %s::bytea[]) ON CONFLICT (conversation_id) DO UPDATE "
                "SET subject_id = coalesce(data_keys.subject_id, EXCLUDED.subject_id) "
                "RETURNING key_id::text, conversation_id, wrapped, subject_id",
                ([k for k, _ in made.values()], list(made), [wanted[c] for c in made],
                 [self.master.wrap(k, key) for k, key in made.values()])).fetchall())
        except KeyStoreUnavailable:
            return  # each conversation asks on its own then: one with a cached key goes on, a new one fails
        with self._lock:
            for key_id, cid, wrapped, subject in rows:
                key = made[cid][1] if made[cid][0] == key_id else self.master.unwrap(key_id, bytes(wrapped))
                self._by_conversation[cid] = _Cached(key_id, key, now, subject)
                self._by_id[key_id] = key
            self._trim()

    def keys(self, key_ids: set[str]) -> Mapping[str, bytes]:
        with self._lock:
            found = {k: self._by_id[k] for k in key_ids if k in self._by_id}
        missing = [k for k in key_ids if k not in found]
        if missing:
            rows = self._run(lambda conn: conn.execute(
                "SELECT key_id::text, wrapped FROM data_keys WHERE key_id = ANY(%s::uuid[])", (missing,)).fetchall())
            fetched = {key_id: self.master.unwrap(key_id, bytes(wrapped)) for key_id, wrapped in rows}
            with self._lock:
                self._by_id.update(fetched)
                self._trim()
            found |= fetched
        return found

    def evict(self, key_ids: list[str], conversations: list[str]) -> None:
        """Forget cached keys (their deletion came by)."""
        with self._lock:
            for key_id in key_ids:
                self._by_id.pop(key_id, None)
            for cid in conversations:
                self._by_conversation.pop(cid, None)

    # -- forgetting (as the owner) ----------------------------------------------------------------------------

    def delete(self, *, subject_id: str | None = None, conversation_id: str | None = None) -> Forgotten:
        """Delete the data keys of a subject's conversations, or of one conversation, noting each in
        ``forgotten_keys`` in the same transaction; returns those and the ones deleted before."""
        column, value = ("subject_id", subject_id) if subject_id is not None else ("conversation_id", conversation_id)
        where = sql.Identifier(column)
        try:
            with clients.postgres(self.settings, role=PostgresRole.OWNER, schema=self.settings.keys_schema) as conn:
                deleted = conn.execute(sql.SQL(
                    "WITH gone AS (DELETE FROM data_keys WHERE {} = %s RETURNING key_id, conversation_id, subject_id) "
                    "INSERT INTO forgotten_keys (key_id, conversation_id, subject_id) SELECT * FROM gone "
                    "ON CONFLICT DO NOTHING RETURNING key_id::text, conversation_id").format(where),
                    (value,)).fetchall()
                rows = conn.execute(sql.SQL("SELECT key_id::text, conversation_id FROM forgotten_keys WHERE {} = %s "
                                            "ORDER BY forgotten_at, key_id").format(where), (value,)).fetchall()
                conn.commit()
        except clients.PostgresUnavailable as exc:
            raise KeyStoreUnavailable(f"the key store: {exc}") from exc
        self.evict([r[0] for r in rows], [r[1] for r in rows])
        return Forgotten([r[0] for r in rows], sorted({r[1] for r in rows}), len(deleted))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- the store ------------------------------------------------------------------------------------------

    def _fetch_or_make(self, conversation_id: str, subject_id: str | None) -> tuple[str, bytes, str | None]:
        """The conversation's key and subject; the key made and stored when it has none (two writers at once
        get the same one). A subject given later is recorded on a key made without one; a key keeps the first
        subject recorded on it."""
        key_id = str(uuid.uuid4())
        key = new_key()
        row = self._run(lambda conn: conn.execute(
            "INSERT INTO data_keys (key_id, conversation_id, subject_id, wrapped) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (conversation_id) DO UPDATE SET subject_id = coalesce(data_keys.subject_id, "
            "EXCLUDED.subject_id) RETURNING key_id::text, wrapped, subject_id",
            (key_id, conversation_id, subject_id, self.master.wrap(key_id, key))).fetchone())
        assert row is not None
        found_id, wrapped, subject = row
        return found_id, (key if found_id == key_id else self.master.unwrap(found_id, bytes(wrapped))), subject

    def _run(self, action: Callable[[psycopg.Connection], T]) -> T:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = clients.postgres(self.settings, role=PostgresRole.KEYS,
                                                  schema=self.settings.keys_schema)
                    self._conn.autocommit = True
                return action(self._conn)
            except clients.PostgresUnavailable as exc:
                raise KeyStoreUnavailable(f"the key store: {exc}") from exc
            except psycopg.errors.UndefinedTable:
                raise KeyStoreUnavailable(f"the key store has no table in schema {self.settings.keys_schema}: "
                                          "run `agentlog stack up`") from None
            except psycopg.OperationalError as exc:
                self._conn = None
                raise KeyStoreUnavailable(f"the key store: {str(exc).strip().splitlines()[0]}") from exc

    def _trim(self) -> None:
        while len(self._by_id) > CACHED:
            self._by_id.popitem(last=False)
        while len(self._by_conversation) > CACHED:
            self._by_conversation.popitem(last=False)


class Opener:
    """Opens sealed events for a reader (a projector, replay, saga recovery), its keys fetched once per batch.

    A reader that sees a conversation forgotten drops the conversation's cached key, so its events read
    again later (a rewind, a rebuild) read as erased. With no master key configured, a sealed event is a
    KeyStoreUnavailable: its text cannot be read here, and it must not be projected blank."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: KeyStore | None = None

    def open_all(self, events: list[Event]) -> list[Event]:
        for event in events:
            if event.event_type == EventType.SUBJECT_FORGOTTEN and self._store is not None:
                self._store.evict(list(event.payload.get("key_ids") or []), [event.conversation_id])
        wanted = {e.key_id for e in events if e.sealed is not None and e.key_id is not None}
        if not wanted:
            return events
        found = self.store().keys(wanted)
        return [open_sealed(e, found.get(e.key_id)) if e.sealed is not None and e.key_id else e for e in events]

    def store(self) -> KeyStore:
        if self._store is None:
            path = self.settings.master_key_file
            if path is None or not path.exists():
                raise KeyStoreUnavailable(f"sealed events, and no master key at {path} to open them: set "
                                          "AGENTLOG_MASTER_KEY_FILE to the key they were sealed with")
            self._store = KeyStore(self.settings)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
