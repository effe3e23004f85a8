"""The suite runs against the real services: the stack is brought up once per run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agentlog.deploy.local.stack import Stack
from agentlog.deploy.settings import Settings, settings as process_settings
from agentlog.deploy.topics import delete_topics, ensure_topics

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def stack() -> Settings:
    """The local stack, up (a no-op when `make test` already brought it up)."""
    current = process_settings()
    Stack(current).up()
    return current


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def topic(stack: Settings, unique: str):
    """A fresh events topic of the stack's partition count, deleted afterwards."""
    name = f"test.{unique}"
    ensure_topics(stack, [name])
    yield name
    delete_topics(stack, [name])


def agentlog(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``agentlog`` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "agentlog.consumers.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=timeout)
