"""Kafka 4 in KRaft mode, one node or a cluster of three, from Apache Kafka's jars on Maven Central."""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from agentlog.deploy import kafka
from agentlog.deploy.credentials import KafkaPrincipal, LocalCredentials, write_secret
from agentlog.deploy.errors import ServiceUnreachable, StackError
from agentlog.deploy.local import secrets as local_secrets
from agentlog.deploy.local.address import host_port
from agentlog.deploy.local.process import Daemon, is_local, port_open, run, wait_until
from agentlog.deploy.local.provision import HERE, done_marker, fetched, maven
from agentlog.deploy.local.service import Service, ServiceStatus
from agentlog.deploy.settings import KAFKA_PORT_STEP

POM = HERE / "kafka-pom.xml"
KAFKA_VERSION = re.findall(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())[0]
HEAP = "-Xmx512m"


@dataclass(frozen=True)
class Node:
    """One broker (and controller) of the local Kafka: its id, listener port (the controller's is the next)
    and directory."""

    id: int
    host: str
    port: int
    home: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def daemon(self) -> Daemon:
        return Daemon(f"kafka-{self.id}", self.home / "kafka.pid", self.home / "kafka.log")

    def quorum(self) -> tuple[int, int] | None:
        """(leader epoch, leader id) of the metadata quorum as this node last wrote it down."""
        try:
            state = json.loads((self.home / "data" / "__cluster_metadata-0" / "quorum-state").read_text())
            return int(state["leaderEpoch"]), int(state["leaderId"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


class Kafka(Service):
    name = "kafka"

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

    def _host_port(self) -> tuple[str, int]:
        return host_port(self.name, "AGENTLOG_KAFKA_BOOTSTRAP", self.address, 9092)

    @property
    def nodes(self) -> list[Node]:
        """One node, in the service's directory; or a cluster, each node in ``node-N`` beneath it."""
        host, port = self._host_port()
        count = self.settings.stack_nodes
        return [Node(index + 1, host, port + KAFKA_PORT_STEP * index,
                     self.home if count == 1 else self.home / f"node-{index + 1}") for index in range(count)]

    @property
    def libs(self) -> Path:
        return self.settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def daemon(self) -> Daemon:
        return self.nodes[0].daemon

    def status(self) -> ServiceStatus:
        host, port = self._host_port()
        nodes = self.nodes
        managed = any(node.daemon.pid() is not None for node in nodes)
        version = KAFKA_VERSION if managed else None
        if not any(port_open(node.host, node.port) for node in nodes):
            return ServiceStatus(self.name, self.address, False, version, managed, "not answering",
                                 nodes=self._nodes(nodes, set()))
        config = self.settings.kafka_config()
        try:
            metadata = kafka.admin(self.settings).list_topics(timeout=5)
        except Exception as exc:  # the client raises KafkaException with varied codes
            return ServiceStatus(self.name, self.address, False, version, managed, f"metadata failed: {exc}",
                                 nodes=self._nodes(nodes, set()))
        alive = {broker.id for broker in metadata.brokers.values()}
        listed = self._nodes(nodes, alive)
        protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
        whole = len(nodes) == 1 or all(node["healthy"] for node in listed)
        return ServiceStatus(self.name, self.address, whole, version, managed,
                             f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topics",
                             f"SASL/{config.get('sasl.mechanism')}" if protocol.startswith("SASL") else None,
                             protocol in {"SSL", "SASL_SSL"}, nodes=listed)

    def _nodes(self, nodes: list[Node], alive: set[int]) -> list[dict[str, object]]:
        """Each node as ``stack status --json`` lists it: healthy when its process runs, answers on its port and
        the cluster lists it (a broker killed a moment ago is listed until it is fenced, so the port is asked
        too); ``leads`` names the active controller (the newest leader among what the running nodes wrote
        down of the quorum)."""
        running = {node.id: node.daemon.pid() for node in nodes}
        said = [node.quorum() for node in nodes if running[node.id] is not None]
        leader = max((state for state in said if state is not None), default=(0, -1))[1]
        return [{"id": node.id, "address": node.address, "pid": running[node.id],
                 "healthy": node.id in alive and (len(nodes) == 1 or (running[node.id] is not None
                                                                      and port_open(node.host, node.port))),
                 "leads": ["controller"] if node.id == leader and node.id in alive else []} for node in nodes]

    def up(self) -> ServiceStatus:
        host, port = self._host_port()
        current = self.status()
        if current.healthy:
            return current
        if not is_local(host):
            raise ServiceUnreachable(self.name, self.address, "fix AGENTLOG_KAFKA_BOOTSTRAP or start that broker")
        found = local_secrets.ensure(self.settings.stack_dir)
        nodes = self.nodes
        if len(nodes) == 1:
            return self._up_one(nodes[0], found)
        self._fetch()
        cluster_id = self._cluster_id()
        for node in nodes:
            if node.daemon.pid() is None:
                if port_open(node.host, node.port):
                    raise StackError(f"kafka: something else holds {node.address}, node {node.id}'s port")
                self._start_node(node, found, cluster_id)
        if not wait_until(lambda: self.status().healthy, timeout=120):
            raise StackError(f"kafka's {len(nodes)} nodes did not all join at {self.address}: "
                             + "; ".join(f"node {n.id}: {n.daemon.log_tail(2)}" for n in nodes))
        return self._ready()

    def _up_one(self, node: Node, found: LocalCredentials) -> ServiceStatus:
        formatted = (node.home / "data" / "meta.properties").exists()
        if formatted and not self._secured.exists():
            self._add_users(node, found)  # a broker from before security was on: its log stays
        if port_open(node.host, node.port) or node.daemon.pid() is not None:
            if wait_until(lambda: self.status().healthy, timeout=60):
                return self.status()
            raise StackError(f"kafka: something holds {node.address} but does not answer as a broker")
        self._fetch()
        self._start_node(node, found, None)
        if not wait_until(lambda: self.status().healthy, timeout=90):
            raise StackError(f"kafka did not become healthy at {self.address}: {node.daemon.log_tail()}")
        return self._ready()

    def _ready(self) -> ServiceStatus:
        self._secured.touch()
        (self.home / "version").write_text(KAFKA_VERSION)
        return self.status()

    def _cluster_id(self) -> str:
        """The cluster's id, made once and kept: every node is formatted with it."""
        kept = self.home / "cluster.id"
        if not kept.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            kept.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        return kept.read_text().strip()

    def _start_node(self, node: Node, found: LocalCredentials, cluster_id: str | None) -> None:
        config = self._configure(node, found)
        if not (node.home / "data" / "meta.properties").exists():
            self._format(config, found, cluster_id)
        self._start(node, config)

    @property
    def _secured(self) -> Path:
        """Written once the broker runs with SASL_SSL, its users and the authorizer."""
        return self.home / "secured"

    def _start(self, node: Node, config: Path) -> None:
        node.daemon.start(self._java(
            "-Xms256m", HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={HERE / 'kafka-log4j2.properties'}",
            "kafka.Kafka", str(config)))

    def _add_users(self, node: Node, found: LocalCredentials) -> None:
        """Give a broker formatted before security was on its SCRAM users: started as it was (PLAINTEXT),
        asked by an admin client, then stopped, to start again secured."""
        if node.daemon.pid() is None:
            self._fetch()
            self._start(node, self._configure(node, None))
        config: dict[str, Any] = {"bootstrap.servers": node.address, "logger": logging.getLogger("agentlog.kafka")}
        plain = AdminClient(config)
        if not wait_until(lambda: port_open(node.host, node.port), timeout=60):
            raise StackError(f"kafka did not start at {self.address}: {node.daemon.log_tail()}")
        upserts: list[UserScramCredentialAlteration] = [UserScramCredentialUpsertion(principal.value, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512,
                                                                                     8192),
                                                found.password("kafka", principal.value).encode())
                   for principal in KafkaPrincipal]
        for future in plain.alter_user_scram_credentials(upserts, request_timeout=60).values():
            future.result()
        node.daemon.stop(timeout=30)

    def down(self) -> bool:
        return any([node.daemon.stop(timeout=30) for node in self.nodes])

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

    def _configure(self, node: Node, found: LocalCredentials | None) -> Path:
        """The broker's configuration: SASL_SSL with SCRAM-SHA-512 for clients (the admin's password is in it,
        so the file is 0600), the controller on mutual TLS, the authorizer denying what no ACL allows.
        ``found`` None: PLAINTEXT, only to give an older broker its users."""
        data = node.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = node.home / "server.properties"
        host, port = node.host, node.port
        voters = ",".join(f"{peer.id}@{peer.host}:{peer.port + 1}" for peer in self.nodes)
        lines = [
            "process.roles=broker,controller",
            f"node.id={node.id}",
            f"controller.quorum.voters={voters}",
            "controller.listener.names=CONTROLLER",
        ]
        if found is None:
            lines += [f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{port + 1}",
                      f"advertised.listeners=PLAINTEXT://{host}:{port}", "inter.broker.listener.name=PLAINTEXT",
                      "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"]
        else:
            tls = node.home / "tls"
            tls.mkdir(exist_ok=True)
            tls.chmod(0o700)
            write_secret(tls / "keystore.pem", (found.directory / "server.key").read_bytes()
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
            "offsets.topic.num.partitions=6",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=-1",
            "num.network.threads=2",
            "num.io.threads=4",
            *replication(len(self.nodes)),
            "",
        ]
        write_secret(config, "\n".join(lines).encode())
        return config

    def _format(self, config: Path, found: LocalCredentials, cluster_id: str | None) -> None:
        """Format the storage with a SCRAM user per principal (KRaft reads them from the metadata log); every
        node of a cluster with the cluster's one id."""
        cluster_id = cluster_id or base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        users = [f"SCRAM-SHA-512=[name={p.value},password={found.password('kafka', p.value)}]" for p in KafkaPrincipal]
        # one id in 32 begins with "-": given as "--cluster-id=…", it is not taken for an option
        run(self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config),
                       *(arg for user in users for arg in ("--add-scram", user))),
            what="formatting Kafka storage")


FENCING = {
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 500,
    "replica.lag.time.max.ms": 5000,
    "controller.quorum.election.timeout.ms": 1000,
    "controller.quorum.fetch.timeout.ms": 2000,
}
"""A cluster's timeouts: a broker that stops heartbeating is fenced (its leaderships move, it leaves every ISR)
within 3 s, where the defaults take 9 s, and a follower that stops fetching leaves the ISR within 5 s, not 30 s."""


def replication(nodes: int) -> list[str]:
    """Replication settings for ``nodes`` brokers: one copy on one node; on a cluster three, two of them in
    sync before a write is acknowledged (acks=all), for every topic and Kafka's own."""
    factor, in_sync = (1, 1) if nodes == 1 else (3, 2)
    lines = [f"default.replication.factor={factor}", f"min.insync.replicas={in_sync}",
             f"offsets.topic.replication.factor={factor}",
             f"transaction.state.log.replication.factor={factor}", f"transaction.state.log.min.isr={in_sync}",
             f"share.coordinator.state.topic.replication.factor={factor}",
             f"share.coordinator.state.topic.min.isr={in_sync}"]
    if nodes > 1:
        lines += ["unclean.leader.election.enable=false", *(f"{key}={value}" for key, value in FENCING.items())]
    return lines
