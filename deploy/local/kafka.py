"""Kafka 4 in KRaft mode, one node, from Apache Kafka's jars on Maven Central."""

from __future__ import annotations

import base64
import re
import shutil
import uuid

from agentlog.deploy import kafka
from agentlog.deploy.errors import ServiceUnreachable, StackError
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
        try:
            metadata = kafka.admin(self.settings).list_topics(timeout=5)
        except Exception as exc:  # the client raises KafkaException with varied codes
            return ServiceStatus(self.name, self.address, False, version, managed, f"metadata failed: {exc}")
        return ServiceStatus(self.name, self.address, True, version, managed,
                             f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topics")

    def up(self) -> ServiceStatus:
        host, port = self._host_port()
        current = self.status()
        if current.healthy:
            return current
        if not is_local(host):
            raise ServiceUnreachable(self.name, self.address, "fix AGENTLOG_KAFKA_BOOTSTRAP or start that broker")
        if port_open(host, port) or self.daemon.pid() is not None:
            if wait_until(lambda: self.status().healthy, timeout=60):
                return self.status()
            raise StackError(f"kafka: something holds {host}:{port} but does not answer as a broker")
        self._fetch()
        config = self._configure(host, port)
        if not (self.home / "data" / "meta.properties").exists():
            self._format(config)
        self.daemon.start(self._java(
            "-Xms256m", HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={HERE / 'kafka-log4j2.properties'}",
            "kafka.Kafka", str(config)))
        if not wait_until(lambda: self.status().healthy, timeout=90):
            raise StackError(f"kafka did not become healthy at {self.address}: {self.daemon.log_tail()}")
        (self.home / "version").write_text(KAFKA_VERSION)
        return self.status()

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

    def _configure(self, host: str, port: int):
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{port + 1}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{port + 1}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
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
        ]))
        return config

    def _format(self, config) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # one id in 32 begins with "-": given as "--cluster-id=…", it is not taken for an option
        run(self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)),
            what="formatting Kafka storage")
