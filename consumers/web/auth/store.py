"""Users, API tokens and login sessions, kept in Postgres (schema ``AGENTLOG_AUTH_SCHEMA``).

Passwords are hashed with Argon2id (argon2-cffi). Tokens and session ids are 256 random bits, so a
SHA-256 of each is what is stored: a leak of the table gives no way in. The web role
(``agentlog_web``) reads and writes these tables and nothing else; the schema's owner creates them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Iterator

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import sql
from psycopg.rows import dict_row

from agentlog.consumers.web.auth.roles import Principal, Role
from agentlog.deploy import clients
from agentlog.deploy.credentials import PostgresRole
from agentlog.deploy.settings import Settings
from agentlog.projections.durations import duration
from agentlog.schemas.errors import AgentlogError

log = logging.getLogger("agentlog.auth")

TOKEN_PREFIX = "agentlog_"
SESSION_HOURS = 12
FAILURES = 5
LOCKOUT_SECONDS = 60
"""Five wrong passwords for a name within a minute, and that name may not log in for the rest of it."""
MAX_PASSWORD = 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASHER = PasswordHasher()
_DECOY = _HASHER.hash(secrets.token_urlsafe(18))
"""Checked against when the name is no user's, so that such a login takes as long as a real one."""

DDL = """
CREATE TABLE IF NOT EXISTS users (
    name          text PRIMARY KEY,
    role          text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS tokens (
    name         text PRIMARY KEY,
    role         text NOT NULL,
    token_sha256 text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz);
CREATE TABLE IF NOT EXISTS login_attempts (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name      text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS login_attempts_name ON login_attempts (name, failed_at);
CREATE TABLE IF NOT EXISTS sessions (
    id_sha256  text PRIMARY KEY,
    user_name  text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL);
"""


class UnknownName(AgentlogError):
    """No user or token of that name."""


class BadCredentials(AgentlogError):
    """A name and password, a token or a session that does not let anyone in."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def expiry(text: str | None) -> timedelta | None:
    """A token's life as users write it (``30d``) as a timedelta; None (no text) for a token that never expires."""
    if not text:
        return None
    amount, unit = duration(text, option="--expires")
    if amount == 0:
        raise AgentlogError(f"--expires {text!r}: a token must live a while; give a duration like 30d, or none "
                            "for a token that never expires")
    return timedelta(seconds=amount * _SECONDS[unit])


def check_name(name: str, what: str = "user") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AgentlogError(f"{what} name {name[:80]!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-', "
                            "beginning with a letter or digit")
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise AgentlogError(f"role {role[:40]!r}: choose one of {', '.join(r.value for r in Role)}") from None


class AuthStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = settings.auth_schema
        self._local = threading.local()

    @contextmanager
    def _connect(self, role: PostgresRole = PostgresRole.WEB) -> Iterator[psycopg.Connection]:
        """A connection as ``role``: the web role's is kept per thread (a request asks on every call); one
        that broke is opened again on the next call, and an outage is a PostgresUnavailable."""
        if role != PostgresRole.WEB:
            with clients.postgres(self.settings, role=role, schema=self.schema) as own:
                own.autocommit = True
                yield own
            return
        conn: psycopg.Connection[tuple[Any, ...]] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = clients.postgres(self.settings, role=role, schema=self.schema)
            conn.autocommit = True
            self._local.conn = conn
        try:
            yield conn
        except psycopg.OperationalError as exc:
            conn.close()
            raise clients.PostgresUnavailable(f"postgres: {str(exc).strip().splitlines()[0]}") from exc

    def setup(self) -> None:
        """Create the schema and its tables as their owner, for the web role alone to use (idempotent)."""
        with self._connect(PostgresRole.OWNER) as conn, conn.transaction():
            schema = sql.Identifier(self.schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
            conn.execute(DDL)
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PostgresRole.WEB.value,)).fetchone():
                web = sql.Identifier(PostgresRole.WEB.value)
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, web))
                conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON users, tokens, sessions, "
                                     "login_attempts TO {}").format(web))

    # users

    def add_user(self, name: str, role: str, *, password: str | None = None) -> str:
        """Add a user; returns the password (a generated one unless given), which is not kept anywhere."""
        name, kind = check_name(name), check_role(role)
        password = password or secrets.token_urlsafe(18)
        with self._connect() as conn:
            try:
                conn.execute("INSERT INTO users (name, role, password_hash) VALUES (%s, %s, %s)",
                             (name, kind.value, _HASHER.hash(password)))
            except psycopg.errors.UniqueViolation:
                raise AgentlogError(f"user {name!r} exists already; `agentlog user remove {name}` first") from None
        log.info("user %s added with role %s", name, kind.value)
        return password

    def remove_user(self, name: str) -> None:
        with self._connect() as conn:
            if conn.execute("DELETE FROM users WHERE name = %s", (name,)).rowcount == 0:
                raise UnknownName(f"no user {name[:80]!r}; `agentlog user list` shows them")
        log.info("user %s removed", name)

    def users(self) -> list[dict[str, Any]]:
        with self._connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute("SELECT name, role, created_at FROM users ORDER BY name").fetchall()

    def anyone(self) -> bool:
        """Whether any user or live token exists (with none, serve shows only how to make the first)."""
        with self._connect() as conn:
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM tokens WHERE "
                               "revoked_at IS NULL)").fetchone()
        return bool(row and row[0])

    def login(self, name: str, password: str) -> tuple[Principal, str]:
        """A new session for the user whose password this is: (who, session id); BadCredentials otherwise,
        and for a while after ``FAILURES`` wrong passwords for that name (guessing is slowed to a trickle)."""
        principal = self.check_password(name, password)
        session = secrets.token_urlsafe(32)
        with self._connect() as conn:
            conn.execute("INSERT INTO sessions (id_sha256, user_name, expires_at) VALUES (%s, %s, %s)",
                         (_digest(session), name, datetime.now(UTC) + timedelta(hours=SESSION_HOURS)))
            conn.execute("DELETE FROM sessions WHERE expires_at < now()")
        log.info("login of %s (%s)", name, principal.role)
        return principal, session

    def check_password(self, name: str, password: str) -> Principal:
        """The user whose password this is; BadCredentials otherwise, and for a while after ``FAILURES`` wrong
        passwords for that name, whichever way they came (the login page, ClickHouse's protocol).

        Each attempt is counted in Postgres before its password is checked, under a lock on the name, so
        attempts in parallel, on any replica of ``serve`` or after a restart, are counted all the same; a name
        that is no user's costs as much as one that is (a hash is checked either way)."""
        key = name[:80].replace("\x00", "").encode("utf-8", "replace").decode("utf-8")  # text Postgres keeps
        with self._connect() as conn:
            attempt = self._attempt(conn, key)
            row = None
            if _NAME.fullmatch(name) and len(password) <= MAX_PASSWORD:  # nothing else is a user's
                row = conn.execute("SELECT role, password_hash FROM users WHERE name = %s", (name,)).fetchone()
            try:
                _HASHER.verify(row[1] if row is not None else _DECOY, password[:MAX_PASSWORD])
                if row is None:
                    raise VerificationError
            except (VerificationError, InvalidHashError):
                log.warning("failed login for %r", key)
                raise BadCredentials("that name and password do not match a user; ask an admin for an account "
                                     "(`agentlog user add NAME --role ROLE`)") from None
            conn.execute("DELETE FROM login_attempts WHERE id = %s", (attempt,))  # it was no failure
        return Principal(name, Role(row[0]), "user")

    def _attempt(self, conn: psycopg.Connection, key: str) -> int:
        """Count one attempt for ``key`` (as a failure until its password matches): its id, or BadCredentials
        when ``FAILURES`` failed within ``LOCKOUT_SECONDS``."""
        window = timedelta(seconds=LOCKOUT_SECONDS)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{self.schema}/login/{key}",))
            conn.execute("DELETE FROM login_attempts WHERE failed_at < clock_timestamp() - %s", (window,))
            (recent,) = conn.execute("SELECT count(*) FROM login_attempts WHERE name = %s", (key,)).fetchone() \
                or (0,)
            if recent >= FAILURES:
                log.warning("login for %r refused: %d failed logins in %d s", key, recent, LOCKOUT_SECONDS)
                raise BadCredentials(f"too many failed logins for that name; wait {LOCKOUT_SECONDS} s and try again")
            (attempt,) = conn.execute("INSERT INTO login_attempts (name) VALUES (%s) RETURNING id",
                                      (key,)).fetchone() or (0,)
        return int(attempt)

    def session(self, session: str) -> Principal | None:
        with self._connect() as conn:
            row = conn.execute("SELECT u.name, u.role FROM sessions s JOIN users u ON u.name = s.user_name "
                               "WHERE s.id_sha256 = %s AND s.expires_at > now()", (_digest(session),)).fetchone()
        return Principal(row[0], Role(row[1]), "user") if row else None

    def logout(self, session: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM sessions WHERE id_sha256 = %s", (_digest(session),))

    # tokens

    def create_token(self, role: str, *, name: str | None = None, expires: timedelta | None = None) -> tuple[str, str]:
        """A new API token: (its name, the token), which is shown once and kept only as a digest."""
        kind = check_role(role)
        name = check_name(name, "token") if name else f"{kind.value}-{secrets.token_hex(4)}"
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        until = datetime.now(UTC) + expires if expires else None
        with self._connect() as conn:
            try:
                conn.execute("INSERT INTO tokens (name, role, token_sha256, expires_at) VALUES (%s, %s, %s, %s)",
                             (name, kind.value, _digest(token), until))
            except psycopg.errors.UniqueViolation:
                raise AgentlogError(f"a token named {name!r} exists already; choose another --name") from None
        log.info("token %s created with role %s", name, kind.value)
        return name, token

    def revoke_token(self, name: str) -> None:
        with self._connect() as conn:
            done = conn.execute("UPDATE tokens SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
                                (name,)).rowcount
        if not done:
            raise UnknownName(f"no live token {name[:80]!r}")
        log.info("token %s revoked", name)

    def tokens(self) -> list[dict[str, Any]]:
        with self._connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute("SELECT name, role, created_at, expires_at, revoked_at FROM tokens "
                               "ORDER BY name").fetchall()

    def token(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self._connect() as conn:
            row = conn.execute("SELECT name, role FROM tokens WHERE token_sha256 = %s AND revoked_at IS NULL "
                               "AND (expires_at IS NULL OR expires_at > now())", (_digest(token),)).fetchone()
        return Principal(row[0], Role(row[1]), "token") if row else None
