"""The key store: one data key per conversation, in Postgres, each wrapped by the master key.

A data key is 32 random bytes, registered in the store before it seals anything (a producer keeps a pool
of them, ``deploy.producer_keys``) and bound afterwards to the conversation and subject whose text it
sealed (``schemas.sealing``). Postgres keeps it wrapped (AES-256-GCM under the master key, the key id as
associated data) beside them. The master key is 32 bytes in
``AGENTLOG_MASTER_KEY_FILE`` (mode 0600; ``agentlog stack up`` makes the local stack's); a KMS can take
its place behind ``MasterKey``'s two methods. Forgetting deletes data keys: what they sealed in the log
can then never be read again.

The producers and projectors connect as the KEYS role (read and register keys, bind them through
``bind_keys``, let go of unused ones through ``release_keys``; never delete a key in use); ``forget`` deletes
as the owner and leaves a tombstone that ``bind_keys`` keeps. A store that is down is a StoreUnavailable, which the projectors retry and a
producer reports as the outage it is.
"""

from __future__ import annotations

import os
import stat
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, TypeVar

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
    conversation_id  text,
    subject_id       text,
    wrapped          bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE data_keys ALTER COLUMN conversation_id DROP NOT NULL;
ALTER TABLE data_keys DROP CONSTRAINT IF EXISTS data_keys_conversation_id_key;
ALTER TABLE data_keys ADD COLUMN IF NOT EXISTS first_used timestamptz;
CREATE INDEX IF NOT EXISTS data_keys_subject ON data_keys (subject_id);
CREATE INDEX IF NOT EXISTS data_keys_conversation ON data_keys (conversation_id);
CREATE TABLE IF NOT EXISTS forgotten_keys (
    key_id           uuid        PRIMARY KEY,
    conversation_id  text,
    subject_id       text,
    forgotten_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE forgotten_keys ALTER COLUMN conversation_id DROP NOT NULL;
CREATE INDEX IF NOT EXISTS forgotten_keys_subject ON forgotten_keys (subject_id);
CREATE INDEX IF NOT EXISTS forgotten_keys_conversation ON forgotten_keys (conversation_id);
CREATE TABLE IF NOT EXISTS forgotten_subjects (
    subject_id       text        PRIMARY KEY,
    forgotten_at     timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS forgotten_conversations (
    conversation_id  text        PRIMARY KEY,
    forgotten_at     timestamptz NOT NULL
);
"""
"""``data_keys``: a key is registered before it seals anything (a producer keeps a pool of them), then bound
to the conversation (and subject) it sealed, in the background (``bind_keys``). ``forgotten_keys``: which
keys were deleted, of whom (no key material): a ``forget`` that stopped after deleting the keys (the broker
away) is run again and finds what it has still to announce. ``forgotten_subjects`` and
``forgotten_conversations``: the tombstones ``bind_keys`` checks, so a key first used before its subject or
conversation was forgotten, and bound only after (a producer cut off from the store meanwhile), is deleted
instead of bound."""
FUNCTIONS = """
CREATE OR REPLACE FUNCTION bind_keys(p_keys uuid[], p_conversations text[], p_subjects text[],
                                     p_used timestamptz[])
RETURNS TABLE (key_id uuid, kept boolean)
LANGUAGE sql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
  WITH input AS (
    SELECT DISTINCT ON (i.key_id) i.key_id, i.conversation_id, i.subject_id, i.used
      FROM unnest(p_keys, p_conversations, p_subjects, p_used) AS i(key_id, conversation_id, subject_id, used)
     ORDER BY i.key_id, i.used),
  current AS (
    SELECT i.key_id, i.used, coalesce(d.conversation_id, i.conversation_id) AS conversation_id,
           coalesce(d.subject_id, i.subject_id) AS subject_id
      FROM input i JOIN data_keys d ON d.key_id = i.key_id),
  doomed AS (
    SELECT c.key_id, c.conversation_id, c.subject_id FROM current c
     WHERE EXISTS (SELECT 1 FROM forgotten_subjects f WHERE f.subject_id = c.subject_id AND f.forgotten_at >= c.used)
        OR EXISTS (SELECT 1 FROM forgotten_conversations f
                    WHERE f.conversation_id = c.conversation_id AND f.forgotten_at >= c.used)),
  shredded AS (
    DELETE FROM data_keys d USING doomed x WHERE d.key_id = x.key_id
    RETURNING d.key_id, x.conversation_id, x.subject_id),
  noted AS (
    INSERT INTO forgotten_keys (key_id, conversation_id, subject_id) SELECT * FROM shredded ON CONFLICT DO NOTHING),
  bound AS (
    UPDATE data_keys d SET conversation_id = c.conversation_id, subject_id = c.subject_id,
                           first_used = coalesce(d.first_used, c.used)
      FROM current c WHERE d.key_id = c.key_id AND NOT EXISTS (SELECT 1 FROM doomed x WHERE x.key_id = c.key_id)
    RETURNING d.key_id)
  SELECT s.key_id, false FROM shredded s UNION ALL SELECT b.key_id, true FROM bound b
$$;
CREATE OR REPLACE FUNCTION release_keys(p_keys uuid[]) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
  WITH gone AS (DELETE FROM data_keys WHERE key_id = ANY(p_keys) AND conversation_id IS NULL
                AND first_used IS NULL RETURNING 1)
  SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION bind_keys(uuid[], text[], text[], timestamptz[]), release_keys(uuid[]) FROM PUBLIC;
"""
"""What the KEYS role may do besides reading and registering keys: bind a key to what it sealed (deleting it
instead past a tombstone), and let go of registered keys it never used. It can delete no key in use."""
PRODUCER_CACHE_SECONDS = 30.0
"""How often a producer checks that the keys it uses are still in the store: an event sealed under a key
deleted meanwhile reads as erased, so this is how long text written after a ``forget`` may be lost."""
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
    """The key store's schema, tables and functions, made by their owner; the KEYS role may read, register
    and bind keys (through the functions) and let go of the ones it never used."""
    with clients.postgres(settings, role=PostgresRole.OWNER, schema=settings.keys_schema) as conn, \
            conn.transaction():
        schema = sql.Identifier(settings.keys_schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
        conn.execute(DDL)
        conn.execute(sql.SQL(FUNCTIONS).format(schema=schema))
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PostgresRole.KEYS.value,)).fetchone():
            role = sql.Identifier(PostgresRole.KEYS.value)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
            conn.execute(sql.SQL("REVOKE UPDATE ON data_keys FROM {}").format(role))
            conn.execute(sql.SQL("GRANT SELECT, INSERT ON data_keys TO {}").format(role))
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION bind_keys(uuid[], text[], text[], timestamptz[]), "
                                 "release_keys(uuid[]) TO {}").format(role))


def enabled(settings: Settings) -> bool:
    """Whether text is sealed: encryption on and a master key configured."""
    return settings.encryption and settings.master_key_file is not None and settings.master_key_file.exists()


@dataclass
class Forgotten:
    key_ids: list[str]
    """Every key of the subject (or conversation) ever deleted, this time's and earlier ones'."""
    conversations: list[str]
    deleted: int = 0
    """The keys this call deleted."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A key put to use: it sealed text of ``conversation_id`` (of ``subject_id``), first at ``used``; a key
    that sealed something else of the subject (an ingest's staged span) has no conversation."""

    key_id: str
    conversation_id: str | None
    subject_id: str | None
    used: datetime


class KeyStore:
    """The data keys in Postgres, their key material cached by id (a reader's cache lasts as long as the
    process; readers evict a key when its forgetting comes by). Producers take their keys from a
    ``deploy.producer_keys.ProducerKeys``, which registers and binds them through this."""

    def __init__(self, settings: Settings, *, master: MasterKey | None = None) -> None:
        if master is None and settings.master_key_file is None:
            raise ConfigError("no master key: set AGENTLOG_MASTER_KEY_FILE")
        self.settings = settings
        self.master = master or MasterKey.from_file(settings.master_key_file)  # type: ignore[arg-type]
        self._by_id: OrderedDict[str, bytes] = OrderedDict()
        self._bound: dict[str, tuple[str | None, str | None]] = {}
        """Per cached key id, the conversation and subject the store has it bound to."""
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None

    def keys(self, key_ids: set[str]) -> Mapping[str, bytes]:
        """The keys of ``key_ids`` that exist (a deleted one is absent)."""
        with self._lock:
            found = {k: self._by_id[k] for k in key_ids if k in self._by_id}
        missing = [k for k in key_ids if k not in found]
        if missing:
            rows = self._run(lambda conn: conn.execute(
                "SELECT key_id::text, wrapped, conversation_id, subject_id FROM data_keys "
                "WHERE key_id = ANY(%s::uuid[])", (missing,)).fetchall())
            fetched = {key_id: self.master.unwrap(key_id, bytes(wrapped)) for key_id, wrapped, _, _ in rows}
            with self._lock:
                self._by_id.update(fetched)
                self._bound.update({key_id: (cid, subject) for key_id, _, cid, subject in rows})
                self._trim()
            found |= fetched
        return found

    def bound(self, key_id: str) -> tuple[str | None, str | None]:
        """The conversation and subject a cached key is bound to, as the store said when it was fetched."""
        with self._lock:
            return self._bound.get(key_id, (None, None))

    def register(self, count: int) -> list[tuple[str, bytes]]:
        """``count`` new keys, stored (wrapped) before any seals anything: bound later to what they seal."""
        made = [(str(uuid.uuid4()), new_key()) for _ in range(count)]
        self._run(lambda conn: conn.execute(
            "INSERT INTO data_keys (key_id, wrapped) SELECT * FROM unnest(%s::uuid[], %s::bytea[])",
            ([k for k, _ in made], [self.master.wrap(k, key) for k, key in made])))
        return made

    def bind(self, bindings: list[Binding]) -> list[str]:
        """Bind each key to what it sealed (a key keeps the first conversation and subject bound to it);
        returns the keys deleted instead: their subject or conversation was forgotten after they were first
        used (a tombstone), so what they sealed reads as erased."""
        if not bindings:
            return []
        rows = self._run(lambda conn: conn.execute(
            "SELECT key_id::text, kept FROM bind_keys(%s::uuid[], %s::text[], %s::text[], %s::timestamptz[])",
            ([b.key_id for b in bindings], [b.conversation_id for b in bindings], [b.subject_id for b in bindings],
             [b.used for b in bindings])).fetchall())
        shredded = [key_id for key_id, kept in rows if not kept]
        with self._lock:
            for binding in bindings:
                if binding.key_id in self._bound:
                    was = self._bound[binding.key_id]
                    self._bound[binding.key_id] = (was[0] or binding.conversation_id, was[1] or binding.subject_id)
            for key_id in shredded:
                self._by_id.pop(key_id, None)
                self._bound.pop(key_id, None)
        return shredded

    def existing(self, key_ids: list[str]) -> set[str]:
        """Which of ``key_ids`` the store still has (the others were forgotten)."""
        rows = self._run(lambda conn: conn.execute(
            "SELECT key_id::text FROM data_keys WHERE key_id = ANY(%s::uuid[])", (key_ids,)).fetchall())
        return {key_id for (key_id,) in rows}

    def release(self, key_ids: list[str]) -> int:
        """Let go of registered keys that never sealed anything."""
        if not key_ids:
            return 0
        row = self._run(lambda conn: conn.execute("SELECT release_keys(%s::uuid[])", (key_ids,)).fetchone())
        return int(row[0]) if row else 0

    def evict(self, key_ids: list[str], conversations: list[str]) -> None:
        """Forget cached keys (their deletion came by)."""
        with self._lock:
            for key_id in key_ids:
                self._by_id.pop(key_id, None)
                self._bound.pop(key_id, None)

    # -- forgetting (as the owner) ----------------------------------------------------------------------------

    def delete(self, *, subject_id: str | None = None, conversation_id: str | None = None) -> Forgotten:
        """Delete the data keys of a subject's conversations, or of one conversation, noting each in
        ``forgotten_keys`` and the subject (or conversation) as a tombstone in the same transaction; returns
        those keys and the ones deleted before."""
        column, value = ("subject_id", subject_id) if subject_id is not None else ("conversation_id", conversation_id)
        where = sql.Identifier(column)
        tombstones = sql.Identifier("forgotten_subjects" if subject_id is not None else "forgotten_conversations")
        try:
            with clients.postgres(self.settings, role=PostgresRole.OWNER, schema=self.settings.keys_schema) as conn:
                conn.execute(sql.SQL("INSERT INTO {} ({}, forgotten_at) VALUES (%s, now()) ON CONFLICT ({}) "
                                     "DO UPDATE SET forgotten_at = now()").format(tombstones, where, where), (value,))
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
        self.evict([r[0] for r in rows], [r[1] for r in rows if r[1]])
        return Forgotten([r[0] for r in rows], sorted({r[1] for r in rows if r[1]}), len(deleted))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- the store ------------------------------------------------------------------------------------------

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
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction):
                raise KeyStoreUnavailable(f"the key store has no table or function in schema "
                                          f"{self.settings.keys_schema}: run `agentlog stack up`") from None
            except psycopg.OperationalError as exc:
                self._conn = None
                raise KeyStoreUnavailable(f"the key store: {str(exc).strip().splitlines()[0]}") from exc

    def _trim(self) -> None:
        while len(self._by_id) > CACHED:
            gone, _ = self._by_id.popitem(last=False)
            self._bound.pop(gone, None)


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
        store = self.store()
        found = dict(store.keys(wanted))
        for key_id in store.bind(self._unbound(store, events, found)):
            found.pop(key_id, None)
        return [open_sealed(e, found.get(e.key_id)) if e.sealed is not None and e.key_id else e for e in events]

    @staticmethod
    def _unbound(store: KeyStore, events: list[Event], found: Mapping[str, bytes]) -> list[Binding]:
        """The keys these events were sealed with that the store has not bound to them yet (their producer
        stopped before it did): bound here, before anything is opened, so a tombstone is kept (the log is
        what binds a key when its producer could not)."""
        needed: dict[str, Binding] = {}
        for e in events:
            if e.sealed is None or e.key_id is None or e.key_id not in found or e.key_id in needed:
                continue
            conversation, subject = store.bound(e.key_id)
            if conversation is None or (subject is None and e.subject_id is not None):
                needed[e.key_id] = Binding(e.key_id, e.conversation_id, e.subject_id, e.occurred_at)
        return list(needed.values())

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
