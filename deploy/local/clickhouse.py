"""ClickHouse: the embedded engine (chDB) under the stack directory, or a server over HTTP."""

from __future__ import annotations

from importlib import metadata

from agentlog.deploy import clients
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
        if embedded:
            owner = clients.chdb_owner(clients.chdb_path(self.address))
            if owner is not None:
                return ServiceStatus(self.name, self.address, True, _chdb_engine_version(), False,
                                     f"embedded, open in process {owner}")
        try:
            client = clients.clickhouse(self.settings)
            try:
                version = client.query("SELECT version()").result_rows[0][0]
            finally:
                client.close()
        except Exception as exc:  # both drivers raise their own hierarchies
            return ServiceStatus(self.name, self.address, False, None, False, str(exc).splitlines()[0])
        return ServiceStatus(self.name, self.address, True, version, embedded,
                             "embedded (chDB)" if embedded else "server")

    def up(self) -> ServiceStatus:
        current = self.status()
        if current.healthy:
            return current
        if self.settings.embedded_clickhouse:
            raise StackError(f"clickhouse: the embedded engine cannot open {self.address}: {current.detail}")
        raise ServiceUnreachable(self.name, self.address, "fix AGENTLOG_CLICKHOUSE_URL or start that server")

    def down(self) -> bool:
        return False


def _chdb_engine_version() -> str:
    try:
        return metadata.version("chdb-core")
    except metadata.PackageNotFoundError:
        return metadata.version("chdb")
