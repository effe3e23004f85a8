"""The local stack: Kafka, Postgres, Elasticsearch and ClickHouse under one data directory."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

from agentlog.deploy import acls, keys
from agentlog.deploy.errors import StackError
from agentlog.deploy.kafka import wait_ready
from agentlog.deploy.local import secrets
from agentlog.deploy.local.clickhouse import ClickHouse
from agentlog.deploy.local.elasticsearch import Elasticsearch
from agentlog.deploy.local.kafka import Kafka
from agentlog.deploy.local.postgres import Postgres
from agentlog.deploy.local.service import Service, ServiceStatus
from agentlog.deploy.settings import Settings, recorded_nodes
from agentlog.deploy.topics import ensure_topics

GROUPS = ("agentlog.dashboard", "agentlog.search", "agentlog.analytics")
"""The projections' consumer groups on the events topic: their coordinator must answer before ``up`` returns."""


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: list[Service] = [Kafka(settings), Postgres(settings), Elasticsearch(settings),
                                        ClickHouse(settings)]

    def up(self) -> list[ServiceStatus]:
        """Bring every service up (in parallel: Elasticsearch's JVM is the slow one), then create the topics.
        A node of a cluster that is down is started again, and ``up`` returns once it has rejoined."""
        self.check_nodes()
        self.settings.stack_dir.mkdir(parents=True, exist_ok=True)
        (self.settings.stack_dir / "nodes").write_text(f"{self.settings.stack_nodes}\n")
        secrets.ensure(self.settings.stack_dir)
        if self.settings.master_key_file is not None:
            keys.make_master_key(self.settings.master_key_file)
        with ThreadPoolExecutor(len(self.services)) as pool:
            statuses = list(pool.map(lambda service: service.up(), self.services))
        ensure_topics(self.settings)
        acls.grant(self.settings)
        keys.create(self.settings)
        wait_ready(self.settings, [self.settings.events_topic, self.settings.dlq_topic], list(GROUPS))
        return statuses

    def check_nodes(self) -> None:
        """A stack directory is one-node or a cluster for good: asked to be the other, say so before anything
        starts or changes."""
        made = recorded_nodes(self.settings.stack_dir)
        wanted = self.settings.stack_nodes
        if made is not None and made != wanted:
            kind = {1: "a one-node stack", 3: "a three-node cluster"}
            raise StackError(f"{self.settings.stack_dir} holds {kind.get(made, f'{made} nodes')}, not "
                             f"{kind.get(wanted, wanted)}: use another AGENTLOG_STACK_DIR, or `agentlog stack down "
                             "--purge` first (which deletes its data)")

    def down(self, *, purge: bool = False) -> list[str]:
        stopped = [service.name for service in self.services if service.down()]
        if purge:
            shutil.rmtree(self.settings.stack_dir, ignore_errors=True)
        return stopped

    def status(self) -> list[ServiceStatus]:
        with ThreadPoolExecutor(len(self.services)) as pool:
            return list(pool.map(lambda service: service.status(), self.services))
