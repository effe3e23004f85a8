"""Kafka 4 in KRaft mode, one node, from Apache Kafka's jars on Maven Central."""

from __future__ import annotations

import base64
import logging
import re
import shutil
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from agentlog.deploy import kafka
from agentlog.deploy.credentials import KafkaPrincipal, LocalCredentials
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.local import secrets as local_secrets
from agentlog.deploy.local.address import host_port
from agentlog.deploy.local.process import Daemon, is_local, port_open, run, wait_until
from agentlog.deploy.local.provision import HERE, done_marker, fetched, maven
from agentlog.deploy.local.service import Service, ServiceStatus

POM = HERE / "kafka-pom.xml"
KAFKA_VERSION = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text()).group(1)
HEAP = "-Xmx512m"


class Kafka(Service):
    name = "kafka"

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

    def _host_port(self) -> tuple[str, int]:
        return host_port(self.name, "AGENTLOG_KAFKA_BOOTSTRAP", self.address, 9092)

    @property
    def libs(self):
        return self.settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def daemon(self) -> Daemon:
        return Daemon(self.name, self.home / "kafka.pid", self.home / "kafka.log")

    def status(self) -> ServiceStatus:
        host, port = self._host_port()
        managed = self.daemon.pid() is not None
        version = KAFKA_VERSION if managed else None
        if not port_open(host, port):
            return ServiceStatus(self.name, self.address, False, version, managed, "not answering")
        config = self.settings.kafka_config()
        try:
            metadata = kafka.admin(self.settings).list_topics(timeout=5)
        except Exception as exc:  # the client raises KafkaException with varied codes
            return ServiceStatus(self.name, self.address, False, version, managed, f"metadata failed: {exc}")
        protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
        return ServiceStatus(self.name, self.address, True, version, managed,
                             f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topics",
                             f"SASL/{config.get('sasl.mechanism')}" if protocol.startswith("SASL") else None,
                             protocol in {"SSL", "SASL_SSL"})

    def up(self) -> ServiceStatus:
        host, port = self._host_port()
        current = self.status()
        if current.healthy:
            return current
        if not is_local(host):
            raise ServiceUnreachable(self.name, self.address, "fix AGENTLOG_KAFKA_BOOTSTRAP or start that broker")
        found = local_secrets.ensure(self.settings.stack_dir)
        formatted = (self.home / "data" / "meta.properties").exists()
        if formatted and not self._secured.exists():
            self._add_users(host, port, found)  # a broker from before security was on: its log stays
        if port_open(host, port) or self.daemon.pid() is not None:
            if wait_until(lambda: self.status().healthy, timeout=60):
                return self.status()
            raise StackError(f"kafka: something holds {host}:{port} but does not answer as a broker")
        self._fetch()
        config = self._configure(host, port, found)
        if not formatted:
            self._format(config, found)
        self._start(config)
        if not wait_until(lambda: self.status().healthy, timeout=90):
            raise StackError(f"kafka did not become healthy at {self.address}: {self.daemon.log_tail()}")
        self._secured.touch()
        (self.home / "version").write_text(KAFKA_VERSION)
        return self.status()

    @property
    def _secured(self) -> Path:
        """Written once the broker runs with SASL_SSL, its users and the authorizer."""
        return self.home / "secured"

    def _start(self, config: Path) -> None:
        self.daemon.start(self._java(
            "-Xms256m", HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={HERE / 'kafka-log4j2.properties'}",
            "kafka.Kafka", str(config)))

    def _add_users(self, host: str, port: int, found: LocalCredentials) -> None:
        """Give a broker formatted before security was on its SCRAM users: started as it was (PLAINTEXT),
        asked by an admin client, then stopped, to start again secured."""
        if self.daemon.pid() is None:
            self._fetch()
            self._start(self._configure(host, port, None))
        plain = AdminClient({"bootstrap.servers": f"{host}:{port}", "logger": logging.getLogger("agentlog.kafka")})
        if not wait_until(lambda: port_open(host, port), timeout=60):
            raise StackError(f"kafka did not start at {self.address}: {self.daemon.log_tail()}")
        upserts = [UserScramCredentialUpsertion(principal.value, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512,
                                                                                     8192),
                                                found.password("kafka", principal.value).encode())
                   for principal in KafkaPrincipal]
        for future in plain.alter_user_scram_credentials(upserts, request_timeout=60).values():
            future.result()
        self.daemon.stop(timeout=30)

    def down(self) -> bool:
        return self.daemon.stop(timeout=30)

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise StackError("kafka needs Java 17 or newer: install a JDK (Debian: openjdk-17-jre-headless)")
        return [java, "-cp", f"{self.libs}/*", *args]

    def _fetch(self) -> None:
        if fetched(self.libs):
            return
        self.libs.mkdir(parents=True, exist_ok=True)
        maven("-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={self.libs}",
              "-DincludeScope=runtime", what=f"fetching Kafka {KAFKA_VERSION} jars from Maven Central")
        done_marker(self.libs).touch()

    def _configure(self, host: str, port: int, found: LocalCredentials | None) -> Path:
        """The broker's configuration: SASL_SSL with SCRAM-SHA-512 for clients (the admin's password is in it,
        so the file is 0600), the controller on mutual TLS, the authorizer denying what no ACL allows.
        ``found`` None: PLAINTEXT, only to give an older broker its users."""
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{port + 1}",
            "controller.listener.names=CONTROLLER",
        ]
        if found is None:
            lines += [f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{port + 1}",
                      f"advertised.listeners=PLAINTEXT://{host}:{port}", "inter.broker.listener.name=PLAINTEXT",
                      "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"]
        else:
            tls = self.home / "tls"
            tls.mkdir(exist_ok=True)
            tls.chmod(0o700)
            local_secrets.write_secret(tls / "keystore.pem", (found.directory / "server.key").read_bytes()
                                       + (found.directory / "server.pem").read_bytes())
            admin = KafkaPrincipal.ADMIN.value
            lines += [
                f"listeners=SASL_SSL://{host}:{port},CONTROLLER://{host}:{port + 1}",
                f"advertised.listeners=SASL_SSL://{host}:{port}",
                "inter.broker.listener.name=SASL_SSL",
                "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram."
                f'ScramLoginModule required username="{admin}" password="{found.password("kafka", admin)}";',
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={tls / 'keystore.pem'}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={found.ca}",
                "listener.name.controller.ssl.client.auth=required",
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found=false",
                f"super.users=User:{admin};User:CN=localhost",
            ]
        lines += [
            f"log.dirs={data}",
            f"num.partitions={self.settings.partitions}",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=-1",
            "num.network.threads=2",
            "num.io.threads=4",
            "",
        ]
        local_secrets.write_secret(config, "\n".join(lines).encode())
        return config

    def _format(self, config: Path, found: LocalCredentials) -> None:
        """Format the storage with a SCRAM user per principal (KRaft reads them from the metadata log)."""
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        users = [f"SCRAM-SHA-512=[name={p.value},password={found.password('kafka', p.value)}]" for p in KafkaPrincipal]
        # one id in 32 begins with "-": given as "--cluster-id=…", it is not taken for an option
        run(self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config),
                       *(arg for user in users for arg in ("--add-scram", user))),
            what="formatting Kafka storage")
