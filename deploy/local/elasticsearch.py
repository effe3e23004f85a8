"""Elasticsearch from Elastic's integ-test zip on Maven Central, run with a JDK 21+ as an unprivileged user."""

from __future__ import annotations

import glob
import os
import re
import shutil
import zipfile
from pathlib import Path

import bcrypt
from elasticsearch import ApiError, TransportError, UnsupportedProductError
from elasticsearch import Elasticsearch as Client

from agentlog.deploy.credentials import SearchUser
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


class Elasticsearch(Service):
    name = "elasticsearch"

    @property
    def address(self) -> str:
        return self.settings.elasticsearch_url

    @property
    def distribution(self) -> Path:
        return self.settings.cache_dir / f"elasticsearch-{ES_VERSION}"

    @property
    def daemon(self) -> Daemon:
        return Daemon(self.name, self.home / "elasticsearch.pid", self.home / "elasticsearch.log")

    def status(self) -> ServiceStatus:
        host, port = host_port(self.name, "AGENTLOG_ELASTICSEARCH_URL", self.address, 9200)
        managed = self.daemon.pid() is not None
        if not port_open(host, port):
            return ServiceStatus(self.name, self.address, False, None, managed, "not answering")
        auth = self.settings.elasticsearch_auth(SearchUser.ADMIN)
        client = Client(self.address, request_timeout=5, max_retries=0, **auth)
        try:
            health = client.cluster.health()
            nodes = client.nodes.info(node_id="_local", metric="_none")["nodes"]
        except ApiError as exc:
            if exc.meta.status == 401:
                return ServiceStatus(self.name, self.address, False, None, managed,
                                     "refuses agentlog's credentials (401)")
            return ServiceStatus(self.name, self.address, False, None, managed, f"not answering as Elasticsearch: {exc}")
        except (TransportError, UnsupportedProductError) as exc:
            return ServiceStatus(self.name, self.address, False, None, managed, f"not answering as Elasticsearch: {exc}")
        finally:
            client.close()
        version = next(iter(nodes.values()), {}).get("version")
        healthy = health.get("status") in {"green", "yellow"}
        method = "basic" if "basic_auth" in auth else "api key" if "api_key" in auth else None
        return ServiceStatus(self.name, self.address, healthy, version, managed, f"cluster {health.get('status')}",
                             method, self.address.startswith("https://"))

    def up(self) -> ServiceStatus:
        host, port = host_port(self.name, "AGENTLOG_ELASTICSEARCH_URL", self.address, 9200)
        current = self.status()
        if current.healthy:
            return current
        if not is_local(host):
            raise ServiceUnreachable(self.name, self.address, "fix AGENTLOG_ELASTICSEARCH_URL or start that cluster")
        if self.daemon.pid() is not None and not self._secured.exists():
            self.daemon.stop(timeout=60)  # ours, started before security was on
        if self.daemon.pid() is None:
            if port_open(host, port):
                raise StackError(f"elasticsearch: something else holds {host}:{port}")
            self._start(host, port)
        if not wait_until(lambda: self.status().healthy, timeout=120, interval=1.0):
            raise StackError(f"elasticsearch did not become healthy at {self.address}: {self.daemon.log_tail()}")
        return self.status()

    def down(self) -> bool:
        return self.daemon.stop(timeout=60)

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

    def _start(self, host: str, port: int) -> None:
        self._fetch()
        config = self.home / "config"
        if not config.exists():
            shutil.copytree(self.distribution / "config", config)
        for sub in ("data", "logs", "tmp"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (config / "elasticsearch.yml").write_text("\n".join([
            "cluster.name: agentlog",
            "node.name: agentlog-1",
            "discovery.type: single-node",
            f"network.host: {host}",
            f"http.port: {port}",
            f"transport.port: {port + 100}",
            f"path.data: {self.home / 'data'}",
            f"path.logs: {self.home / 'logs'}",
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
        give_to(user, self.home)
        traversable(self.distribution / "bin")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ES_JAVA_HOME": str(java_home()),
            "ES_PATH_CONF": str(config),
            "ES_JAVA_OPTS": HEAP,
            "ES_TMPDIR": str(self.home / "tmp"),
        }
        self.daemon.start([str(self.distribution / "bin" / "elasticsearch")], user=user, env=env, cwd=self.home)
        self._secured.touch()

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
        local_secrets.write_secret(certs / "server.key", (found.directory / "server.key").read_bytes(), owner=owner)
        lines = []
        for user in SearchUser:
            hashed = bcrypt.hashpw(found.password("elasticsearch", user.value).encode(),
                                   bcrypt.gensalt(rounds=10, prefix=b"2a"))
            lines.append(f"{user.value}:{hashed.decode()}")
        local_secrets.write_secret(config / "users", ("\n".join(lines) + "\n").encode(), owner=owner)
        roles: dict[str, list[str]] = {}
        for user, role in USER_ROLES.items():
            roles.setdefault(role, []).append(user.value)
        (config / "users_roles").write_text("".join(f"{role}:{','.join(users)}\n" for role, users in roles.items()))
        (config / "roles.yml").write_text(ROLES)
