"""The local stack: Kafka, Postgres, Elasticsearch and ClickHouse under one data directory."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

from agentlog.deploy import acls, keys
from agentlog.deploy.kafka import wait_ready
from agentlog.deploy.local import secrets
from agentlog.deploy.local.clickhouse import ClickHouse
from agentlog.deploy.local.elasticsearch import Elasticsearch
from agentlog.deploy.local.kafka import Kafka
from agentlog.deploy.local.postgres import Postgres
from agentlog.deploy.local.service import Service, ServiceStatus
from agentlog.deploy.settings import Settings
from agentlog.deploy.topics import ensure_topics

GROUPS = ("agentlog.dashboard", "agentlog.search", "agentlog.analytics")
"""The projections' consumer groups on the events topic: their coordinator must answer before ``up`` returns."""


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: list[Service] = [Kafka(settings), Postgres(settings), Elasticsearch(settings),
                                        ClickHouse(settings)]

    def up(self) -> list[ServiceStatus]:
        """Bring every service up (in parallel: Elasticsearch's JVM is the slow one), then create the topics."""
        self.settings.stack_dir.mkdir(parents=True, exist_ok=True)
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

    def down(self, *, purge: bool = False) -> list[str]:
        stopped = [service.name for service in self.services if service.down()]
        if purge:
            shutil.rmtree(self.settings.stack_dir, ignore_errors=True)
        return stopped

    def status(self) -> list[ServiceStatus]:
        with ThreadPoolExecutor(len(self.services)) as pool:
            return list(pool.map(lambda service: service.status(), self.services))
