"""ClickHouse: the embedded store (chDB) held by its walled engine process, or a server over HTTP."""

from __future__ import annotations

from agentlog.deploy import clients, engine
from agentlog.deploy.credentials import redact
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.local.service import Service, ServiceStatus


class ClickHouse(Service):
    name = "clickhouse"

    @property
    def address(self) -> str:
        return redact(self.settings.clickhouse_url)

    def status(self) -> ServiceStatus:
        embedded = self.settings.embedded_clickhouse
        if not embedded and not self.address.startswith(("http://", "https://")):
            raise StackError(f"clickhouse: AGENTLOG_CLICKHOUSE_URL={self.address!r} must be chdb:///path "
                             "or http(s)://host:port")
        running = engine.running(clients.chdb_path(self.settings.clickhouse_url)) if embedded else None
        if embedded and running is None:
            return ServiceStatus(self.name, self.address, True, None, True,
                                 "embedded (chDB): its engine starts on first use")
        try:
            client = clients.clickhouse(self.settings)
            try:
                version = client.query("SELECT version()").result_rows[0][0]
            finally:
                client.close()
        except Exception as exc:  # both drivers raise their own hierarchies
            return ServiceStatus(self.name, self.address, False, None, False, str(exc).splitlines()[0])
        if running is None:
            return ServiceStatus(self.name, self.address, True, version, False, "server")
        wall = "walled" if running.walled else "OPEN: analysts' SQL has no wall around it"
        return ServiceStatus(self.name, self.address, True, version, True,
                             f"embedded (chDB), engine pid {running.pid} on :{running.port}, {wall}: {running.walls}")

    def up(self) -> ServiceStatus:
        if self.settings.embedded_clickhouse:
            engine.ensure(clients.chdb_path(self.settings.clickhouse_url), idle=0)
        current = self.status()
        if current.healthy:
            return current
        if self.settings.embedded_clickhouse:
            raise StackError(f"clickhouse: the embedded engine cannot open {self.address}: {current.detail}")
        raise ServiceUnreachable(self.name, self.address, "fix AGENTLOG_CLICKHOUSE_URL or start that server")

    def down(self) -> bool:
        return self.settings.embedded_clickhouse and engine.stop(clients.chdb_path(self.settings.clickhouse_url))
