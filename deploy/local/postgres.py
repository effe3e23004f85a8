"""Postgres from Debian's package, a cluster of the project's own under the stack directory."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from agentlog.deploy.clients import postgres_address
from agentlog.deploy.credentials import POSTGRES_SUPERUSER, LocalCredentials, PostgresRole, write_secret
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.local import secrets as local_secrets
from agentlog.deploy.local.address import host_port
from agentlog.deploy.local.process import Daemon, give_to, is_local, port_open, run, service_user, wait_until
from agentlog.deploy.local.provision import ensure_command
from agentlog.deploy.local.service import Service, ServiceStatus


def _bindir() -> Path:
    """The newest installed server's bin directory, installing Debian's postgresql when absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        ensure_command("pg_ctlcluster", "postgresql")
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise StackError("postgres: no server found under /usr/lib/postgresql; install Debian's postgresql")
    return Path(found[-1]).parent


HBA = """# agentlog's local stack: TLS and a password for every connection, nothing else.
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all ::1/128 scram-sha-256
"""

PRIVILEGES = """
REVOKE ALL ON DATABASE {database} FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {roles};
GRANT CREATE ON DATABASE {database} TO {owner};
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO {owner};
"""
"""Who may do what in the application's database: the owner creates schemas, the others connect (and use
temporary tables, the dashboard's staging); each schema's grants come with its migrations."""


class Postgres(Service):
    name = "postgres"

    @property
    def dsn(self) -> str:
        return self.settings.postgres_dsn_for(PostgresRole.OWNER)

    @property
    def address(self) -> str:
        return postgres_address(self.dsn)

    @property
    def daemon(self) -> Daemon:
        return Daemon(self.name, self.home / "postgres.pid", self.home / "postgres.log")

    def status(self) -> ServiceStatus:
        host, port = host_port(self.name, "AGENTLOG_POSTGRES_DSN", self.address, 5432)
        managed = self._pid() is not None
        if not port_open(host, port):
            return ServiceStatus(self.name, self.address, False, None, managed, "not answering")
        try:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                version = _one(conn, "SHOW server_version")
                tls = conn.pgconn.ssl_in_use
                method = _one(conn, "SELECT current_setting('password_encryption')")
        except psycopg.Error as exc:
            return ServiceStatus(self.name, self.address, False, None, managed, str(exc).strip().splitlines()[0])
        return ServiceStatus(self.name, self.address, True, version.split()[0], managed, "accepting connections",
                             method if conninfo_to_dict(self.dsn).get("password") else None, bool(tls))

    def up(self) -> ServiceStatus:
        host, port = host_port(self.name, "AGENTLOG_POSTGRES_DSN", self.address, 5432)
        current = self.status()
        if current.healthy:
            if self._pid() is not None and self._missing_roles():  # ours, from before a role was added
                self._create_roles(host, port, str(conninfo_to_dict(self.dsn).get("dbname", "agentlog")),
                                   local_secrets.ensure(self.settings.stack_dir))
            return current
        if not is_local(host):
            raise ServiceUnreachable(self.name, self.address, "fix AGENTLOG_POSTGRES_DSN or start that server")
        if port_open(host, port) and self._pid() is None:
            raise StackError(f"postgres: a server at {self.address} refuses us ({current.detail}); "
                             "stop it or point AGENTLOG_POSTGRES_DSN elsewhere")
        found = local_secrets.ensure(self.settings.stack_dir)
        bindir = _bindir()
        user = service_user()
        data = self.home / "data"
        database = str(conninfo_to_dict(self.dsn).get("dbname", "agentlog"))
        if self._pid() is not None:  # ours, and not answering as it should: started before its configuration
            self.down()
        if (data / "PG_VERSION").exists() and not self._secured.exists():
            # a cluster from before security was on, or whose roles were never made: it holds read models
            # only, which are rebuilt from the log
            shutil.rmtree(data)
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            give_to(user, self.home)
            password_file = self.home / ".superuser"
            write_secret(password_file, found.password("postgres", POSTGRES_SUPERUSER).encode(),
                                       owner=user)
            try:
                run([str(bindir / "initdb"), "-D", str(data), "-U", POSTGRES_SUPERUSER, "--auth=scram-sha-256",
                     f"--pwfile={password_file}", "-E", "UTF8", "--locale=C.UTF-8"], user=user, what="initdb")
            finally:
                password_file.unlink(missing_ok=True)
        self._configure(data, found)
        give_to(user, self.home)
        if self._pid() is None:
            run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.daemon.log_file), "-w", "-t", "60",
                 "-o", f"-h {host} -p {port} -k '' -c fsync=on -c max_connections=200 "
                       "-c shared_buffers=256MB -c wal_level=logical",
                 "start"], user=user, what="starting postgres")
        if not wait_until(lambda: port_open(host, port), timeout=30):
            raise StackError(f"postgres did not start at {self.address}: {self.daemon.log_tail()}")
        self._create_roles(host, port, database, found)
        self._secured.touch()
        return self.status()

    def _missing_roles(self) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                have = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        except psycopg.Error:
            return False
        return any(role.value not in have for role in PostgresRole)

    @property
    def _secured(self) -> Path:
        """Written once the cluster has its TLS, its scram-only access and its roles."""
        return self.home / "data" / "agentlog-secured"

    def _configure(self, data: Path, found: LocalCredentials) -> None:
        """TLS with the stack's certificate, scram-sha-256 for every connection (``HBA``), no trust anywhere."""
        tls = self.home / "tls"
        tls.mkdir(exist_ok=True)
        tls.chmod(0o700)
        shutil.copyfile(found.directory / "server.pem", tls / "server.pem")
        write_secret(tls / "server.key", (found.directory / "server.key").read_bytes(),
                                   owner=service_user())
        (data / "pg_hba.conf").write_text(HBA)
        (data / "agentlog.conf").write_text(
            "# written by agentlog stack up\n"
            "password_encryption = 'scram-sha-256'\n"
            "ssl = on\n"
            f"ssl_cert_file = '{tls / 'server.pem'}'\n"
            f"ssl_key_file = '{tls / 'server.key'}'\n"
            "ssl_min_protocol_version = 'TLSv1.2'\n")
        main = data / "postgresql.conf"
        if "include_if_exists = 'agentlog.conf'" not in _read(main):
            with main.open("a") as conf:
                conf.write("\ninclude_if_exists = 'agentlog.conf'\n")

    def _create_roles(self, host: str, port: int, database: str, found: LocalCredentials) -> None:
        """The application's roles (none a superuser), their passwords, the database and who may use it."""
        superuser: dict[str, Any] = dict(host=host, port=port, user=POSTGRES_SUPERUSER, sslmode="verify-full",
                                         sslrootcert=str(found.ca),
                                         password=found.password("postgres", POSTGRES_SUPERUSER))
        with psycopg.connect(dbname="postgres", autocommit=True, **superuser) as conn:
            for role in PostgresRole:
                name = sql.Identifier(role.value)
                password = sql.Literal(found.password("postgres", role.value))
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role.value,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                conn.execute(sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                     "NOREPLICATION PASSWORD {}").format(name, password))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(PostgresRole.OWNER.value)))
        with psycopg.connect(dbname=database, autocommit=True, **superuser) as conn:
            others = [role for role in PostgresRole if role != PostgresRole.OWNER]
            conn.execute(sql.SQL(PRIVILEGES).format(
                database=sql.Identifier(database), owner=sql.Identifier(PostgresRole.OWNER.value),
                roles=sql.SQL(", ").join(sql.Identifier(role.value) for role in others)))

    def down(self) -> bool:
        if self._pid() is None:
            return False
        run([str(_bindir() / "pg_ctl"), "-D", str(self.home / "data"), "-m", "fast", "-w", "stop"],
            user=service_user(), what="stopping postgres")
        return True

    def _pid(self) -> int | None:
        pid_file = self.home / "data" / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _one(conn: psycopg.Connection[tuple[Any, ...]], statement: str) -> Any:
    """The first column of the statement's one row."""
    row = conn.execute(statement).fetchone()
    assert row is not None, statement
    return row[0]
