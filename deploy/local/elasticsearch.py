"""Elasticsearch (one node or a cluster of three) from Elastic's integ-test zip on Maven Central, run with a JDK 21+ as an unprivileged user."""

from __future__ import annotations

import glob
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
from elasticsearch import ApiError, TransportError, UnsupportedProductError
from elasticsearch import Elasticsearch as Client

from agentlog.deploy.credentials import SearchUser, write_secret
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.local import secrets as local_secrets
from agentlog.deploy.local.address import host_port
from agentlog.deploy.local.process import Daemon, give_to, is_local, port_open, service_user, wait_until
from agentlog.deploy.local.provision import done_marker, fetched, maven
from agentlog.deploy.local.service import Service, ServiceStatus
from agentlog.deploy.walls import traversable

ES_VERSION = "9.2.4"
ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip"
HEAP = "-Xms512m -Xmx512m"
ROLES = """# written by agentlog stack up: what each of agentlog's users may do
agentlog_search_writer:
  cluster: ["monitor"]
  indices:
    - names: ["conversations*"]
      privileges: ["all"]
agentlog_search_reader:
  cluster: ["monitor"]
  indices:
    - names: ["conversations*"]
      privileges: ["read", "view_index_metadata"]
"""
USER_ROLES = {SearchUser.ADMIN: "superuser", SearchUser.WRITER: "agentlog_search_writer",
              SearchUser.READER: "agentlog_search_reader"}
"""The file realm's users and their roles (the integ-test zip has no native realm)."""


def java_home(minimum: int = 21) -> Path:
    """A JDK of at least ``minimum``: ES_JAVA_HOME, then the newest under /usr/lib/jvm, then JAVA_HOME."""
    candidates = [os.environ.get("ES_JAVA_HOME", "")]
    candidates += sorted(glob.glob("/usr/lib/jvm/*"), key=_jdk_major, reverse=True)
    candidates.append(os.environ.get("JAVA_HOME", ""))
    for home in filter(None, candidates):
        if (Path(home) / "bin" / "java").exists() and _jdk_major(home) >= minimum:
            return Path(home)
    raise StackError(f"elasticsearch needs a JDK {minimum}+; install one (e.g. Debian's openjdk-21-jdk-headless) "
                     "or set ES_JAVA_HOME")


def _jdk_major(home: str) -> int:
    release = Path(home) / "release"
    try:
        found = re.search(r'JAVA_VERSION="(\d+)', release.read_text())
    except OSError:
        found = None
    return int(found.group(1)) if found else 0


@dataclass(frozen=True)
class Node:
    """One node of the local Elasticsearch: ``agentlog-ID``, its HTTP port (the transport's is 100 on) and its
    directory."""

    id: int
    host: str
    port: int
    home: Path

    @property
    def name(self) -> str:
        return f"agentlog-{self.id}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def daemon(self) -> Daemon:
        return Daemon(f"elasticsearch-{self.id}", self.home / "elasticsearch.pid", self.home / "elasticsearch.log")


class Elasticsearch(Service):
    name = "elasticsearch"

    @property
    def address(self) -> str:
        return self.settings.elasticsearch_url

    @property
    def distribution(self) -> Path:
        return self.settings.cache_dir / f"elasticsearch-{ES_VERSION}"

    @property
    def nodes(self) -> list[Node]:
        """One node, in the service's directory; or a cluster, each node in ``node-N`` beneath it."""
        host, port = host_port(self.name, "AGENTLOG_ELASTICSEARCH_URL", self.address, 9200)
        count = self.settings.stack_nodes
        return [Node(index + 1, host, port + index, self.home if count == 1 else self.home / f"node-{index + 1}")
                for index in range(count)]

    @property
    def daemon(self) -> Daemon:
        return self.nodes[0].daemon

    def status(self) -> ServiceStatus:
        nodes = self.nodes
        managed = any(node.daemon.pid() is not None for node in nodes)
        listed = self._nodes(nodes, {})
        if not any(port_open(node.host, node.port) for node in nodes):
            return ServiceStatus(self.name, self.address, False, None, managed, "not answering", nodes=listed)
        auth = self.settings.elasticsearch_auth(SearchUser.ADMIN)
        client = Client(self.settings.elasticsearch_hosts, request_timeout=5, max_retries=1, **auth)
        try:
            health = client.cluster.health()
            joined = client.cat.nodes(format="json", h="name,master,version")
        except ApiError as exc:
            if exc.meta.status == 401:
                return ServiceStatus(self.name, self.address, False, None, managed,
                                     "refuses agentlog's credentials (401)", nodes=listed)
            return ServiceStatus(self.name, self.address, False, None, managed, f"not answering as Elasticsearch: {exc}",
                                 nodes=listed)
        except (TransportError, UnsupportedProductError) as exc:
            return ServiceStatus(self.name, self.address, False, None, managed, f"not answering as Elasticsearch: {exc}",
                                 nodes=listed)
        finally:
            client.close()
        rows: dict[str, dict[str, Any]] = {str(row.get("name")): row for row in joined.body if isinstance(row, dict)}
        listed = self._nodes(nodes, rows)
        version = next((str(row.get("version")) for row in rows.values()), None)
        healthy = health.get("status") in {"green", "yellow"} and all(node["healthy"] for node in listed)
        method = "basic" if "basic_auth" in auth else "api key" if "api_key" in auth else None
        detail = f"cluster {health.get('status')}" + (f", {len(rows)} of {len(nodes)} nodes" if len(nodes) > 1 else "")
        return ServiceStatus(self.name, self.address, healthy, version, managed, detail,
                             method, self.address.startswith("https://"), nodes=listed)

    def _nodes(self, nodes: list[Node], joined: dict[str, dict[str, Any]]) -> list[dict[str, object]]:
        """Each node as ``stack status --json`` lists it: joined to the cluster, and whether it is the elected
        master."""
        return [{"id": node.id, "address": node.address, "pid": node.daemon.pid(),
                 "healthy": node.name in joined or (len(nodes) == 1 and bool(joined)),
                 "leads": ["master"] if joined.get(node.name, {}).get("master") == "*" else []} for node in nodes]

    def up(self) -> ServiceStatus:
        current = self.status()
        if current.healthy:
            return current
        nodes = self.nodes
        if not is_local(nodes[0].host):
            raise ServiceUnreachable(self.name, self.address, "fix AGENTLOG_ELASTICSEARCH_URL or start that cluster")
        for node in nodes:
            if node.daemon.pid() is not None and not self._secured.exists():
                node.daemon.stop(timeout=60)  # ours, started before security was on
            if node.daemon.pid() is None:
                if port_open(node.host, node.port):
                    raise StackError(f"elasticsearch: something else holds {node.address}")
                self._start(node)
        self._secured.touch()
        if not wait_until(lambda: self.status().healthy, timeout=120 * len(nodes), interval=1.0):
            raise StackError(f"elasticsearch did not become healthy at {self.address}: "
                             + "; ".join(f"node {n.id}: {n.daemon.log_tail(2)}" for n in nodes))
        return self.status()

    def down(self) -> bool:
        return any([node.daemon.stop(timeout=60) for node in self.nodes])

    def _fetch(self) -> None:
        if fetched(self.distribution):
            return
        download = self.settings.cache_dir / "downloads"
        download.mkdir(parents=True, exist_ok=True)
        maven("dependency:copy", f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={download}",
              what=f"fetching Elasticsearch {ES_VERSION} from Maven Central")
        shutil.rmtree(self.distribution, ignore_errors=True)
        with zipfile.ZipFile(download / f"elasticsearch-{ES_VERSION}.zip") as archive:
            archive.extractall(self.distribution.parent / ".unzip")
        (self.distribution.parent / ".unzip" / f"elasticsearch-{ES_VERSION}").rename(self.distribution)
        shutil.rmtree(self.distribution.parent / ".unzip", ignore_errors=True)
        for script in (self.distribution / "bin").iterdir():
            script.chmod(0o755)
        for path in self.distribution.rglob("*"):
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        done_marker(self.distribution).touch()

    def _start(self, node: Node) -> None:
        self._fetch()
        config = node.home / "config"
        if not config.exists():
            shutil.copytree(self.distribution / "config", config)
        formed = (node.home / "data" / "_state").exists()
        for sub in ("data", "logs", "tmp"):
            (node.home / sub).mkdir(parents=True, exist_ok=True)
        (config / "elasticsearch.yml").write_text("\n".join([
            "cluster.name: agentlog",
            f"node.name: {node.name}",
            *self._discovery(node, formed),
            f"network.host: {node.host}",
            f"http.port: {node.port}",
            f"transport.port: {node.port + 100}",
            f"path.data: {node.home / 'data'}",
            f"path.logs: {node.home / 'logs'}",
            "xpack.security.enabled: true",
            "xpack.security.http.ssl.enabled: true",
            "xpack.security.http.ssl.certificate: certs/server.pem",
            "xpack.security.http.ssl.key: certs/server.key",
            "xpack.security.http.ssl.certificate_authorities: [certs/ca.pem]",
            "xpack.security.transport.ssl.enabled: true",
            "xpack.security.transport.ssl.verification_mode: certificate",
            "xpack.security.transport.ssl.certificate: certs/server.pem",
            "xpack.security.transport.ssl.key: certs/server.key",
            "xpack.security.transport.ssl.certificate_authorities: [certs/ca.pem]",
            "xpack.security.authc.realms.file.file1.order: 0",
            "cluster.routing.allocation.disk.threshold_enabled: false",
            "action.destructive_requires_name: true",
            "",
        ]))
        self._users(config)
        user = service_user()
        give_to(user, node.home)
        traversable(self.distribution / "bin")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ES_JAVA_HOME": str(java_home()),
            "ES_PATH_CONF": str(config),
            "ES_JAVA_OPTS": HEAP,
            "ES_TMPDIR": str(node.home / "tmp"),
        }
        node.daemon.start([str(self.distribution / "bin" / "elasticsearch")], user=user, env=env, cwd=node.home)

    def _discovery(self, node: Node, formed: bool) -> list[str]:
        """One node: single-node discovery. A cluster: every node is master-eligible and finds the others on
        their transport ports; the first start names the initial masters, later starts must not."""
        nodes = self.nodes
        if len(nodes) == 1:
            return ["discovery.type: single-node"]
        seeds = ", ".join(f'"{peer.host}:{peer.port + 100}"' for peer in nodes)
        lines = [f"discovery.seed_hosts: [{seeds}]", "cluster.fault_detection.follower_check.interval: 1s",
                 "cluster.fault_detection.follower_check.retry_count: 3",
                 "cluster.fault_detection.leader_check.interval: 1s",
                 "cluster.fault_detection.leader_check.retry_count: 3"]
        if not formed:
            lines.append(f"cluster.initial_master_nodes: [{', '.join(peer.name for peer in nodes)}]")
        return lines

    @property
    def _secured(self) -> Path:
        """Written when the node was started with security on (TLS, the file realm's users)."""
        return self.home / "secured"

    def _users(self, config: Path) -> None:
        """The stack's certificate, and the file realm's users (bcrypt hashes) and roles, in ``config``."""
        found = local_secrets.ensure(self.settings.stack_dir)
        owner = service_user()
        certs = config / "certs"
        certs.mkdir(exist_ok=True)
        for name in ("server.pem", "ca.pem"):
            shutil.copyfile(found.directory / name, certs / name)
        write_secret(certs / "server.key", (found.directory / "server.key").read_bytes(), owner=owner)
        lines = []
        for user in SearchUser:
            hashed = bcrypt.hashpw(found.password("elasticsearch", user.value).encode(),
                                   bcrypt.gensalt(rounds=10, prefix=b"2a"))
            lines.append(f"{user.value}:{hashed.decode()}")
        write_secret(config / "users", ("\n".join(lines) + "\n").encode(), owner=owner)
        roles: dict[str, list[str]] = {}
        for user, role in USER_ROLES.items():
            roles.setdefault(role, []).append(user.value)
        (config / "users_roles").write_text("".join(f"{role}:{','.join(users)}\n" for role, users in roles.items()))
        (config / "roles.yml").write_text(ROLES)
