"""Postgres from Debian's package, a cluster of the project's own under the stack directory."""

from __future__ import annotations

import glob
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from agentlog.deploy.errors import ServiceUnreachable, StackError
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


class Postgres(Service):
    name = "postgres"

    @property
    def address(self) -> str:
        try:
            params = conninfo_to_dict(self.settings.postgres_dsn)
        except psycopg.ProgrammingError as exc:
            raise StackError(f"postgres: AGENTLOG_POSTGRES_DSN is not a valid DSN: {exc}") from exc
        return f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}"

    @property
    def daemon(self) -> Daemon:
        return Daemon(self.name, self.home / "postgres.pid", self.home / "postgres.log")

    def status(self) -> ServiceStatus:
        host, port = host_port(self.name, "AGENTLOG_POSTGRES_DSN", self.address, 5432)
        managed = self._pid() is not None
        if not port_open(host, port):
            return ServiceStatus(self.name, self.address, False, None, managed, "not answering")
        try:
            with psycopg.connect(self.settings.postgres_dsn, connect_timeout=5) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
        except psycopg.Error as exc:
            return ServiceStatus(self.name, self.address, False, None, managed, str(exc).strip().splitlines()[0])
        return ServiceStatus(self.name, self.address, True, version.split()[0], managed, "accepting connections")

    def up(self) -> ServiceStatus:
        host, port = host_port(self.name, "AGENTLOG_POSTGRES_DSN", self.address, 5432)
        current = self.status()
        if current.healthy:
            return current
        if not is_local(host):
            raise ServiceUnreachable(self.name, self.address, "fix AGENTLOG_POSTGRES_DSN or start that server")
        if port_open(host, port) and self._pid() is None:
            raise StackError(f"postgres: a server at {self.address} refuses us ({current.detail}); "
                             "stop it or point AGENTLOG_POSTGRES_DSN elsewhere")
        bindir = _bindir()
        user = service_user()
        data = self.home / "data"
        params = conninfo_to_dict(self.settings.postgres_dsn)
        role = str(params.get("user", "agentlog"))
        database = str(params.get("dbname", "agentlog"))
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            give_to(user, self.home)
            run([str(bindir / "initdb"), "-D", str(data), "-U", role, "--auth=trust", "-E", "UTF8",
                 "--locale=C.UTF-8"], user=user, what="initdb")
        give_to(user, self.home)
        if self._pid() is None:
            run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.daemon.log_file), "-w", "-t", "60",
                 "-o", f"-h {host} -p {port} -k '' -c fsync=on -c max_connections=200 "
                       "-c shared_buffers=256MB -c wal_level=logical",
                 "start"], user=user, what="starting postgres")
        if not wait_until(lambda: port_open(host, port), timeout=30):
            raise StackError(f"postgres did not start at {self.address}: {self.daemon.log_tail()}")
        self._create_database(host, port, role, database)
        return self.status()

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

    def _create_database(self, host: str, port: int, role: str, database: str) -> None:
        with psycopg.connect(host=host, port=port, user=role, dbname="postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
