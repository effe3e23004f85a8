"""docker-compose.yml, the Dockerfile and the Kubernetes manifests run commands and settings that exist."""

from __future__ import annotations

import inspect
import re
import tomllib

import pytest
import yaml

from agentlog.deploy import settings as settings_module
from agentlog.deploy.settings import Settings
from tests.conftest import ROOT, agentlog

KUBERNETES = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _agentlog_commands() -> list[tuple[str, list[str], dict[str, str]]]:
    """(where, the agentlog arguments, the environment) of every container that runs agentlog."""
    found = []
    for name, service in _compose()["services"].items():
        if service.get("image", "").startswith("agentlog:"):
            found.append((f"compose {name}", service["command"], service.get("environment", {})))
    config = {}
    for path in KUBERNETES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] in ("ConfigMap", "Secret"):
                config.update(doc.get("data") or doc.get("stringData") or {})
            if doc["kind"] == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    found.append((f"{path.name} {container['name']}", container["args"], config))
    return found


def test_every_container_runs_a_real_agentlog_command() -> None:
    commands = _agentlog_commands()
    assert {" ".join(args[:1]) for _, args, _ in commands} == {"project", "serve"}
    assert {args[2] for _, args, _ in commands if args[0] == "project"} == {"dashboard", "search", "analytics"}
    for where, args, _ in commands:
        done = agentlog(*args, "--help", timeout=60)
        assert done.returncode == 0, f"{where}: agentlog {' '.join(args)}: {done.stderr}"


@pytest.mark.parametrize("where,args,env", _agentlog_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_setting_is_one_agentlog_reads(where: str, args: list[str], env: dict[str, str]) -> None:
    known = set(re.findall(r'"(AGENTLOG_[A-Z_]+)"', inspect.getsource(settings_module)))
    for name in env:
        assert name in known or name.startswith("AGENTLOG_KAFKA_"), f"{where}: agentlog does not read {name}"
    settings = Settings.from_env(env)
    assert not settings.embedded_clickhouse, f"{where}: a container needs a ClickHouse server"
    assert "127.0.0.1" not in settings.kafka_bootstrap + settings.postgres_dsn + settings.elasticsearch_url, where


def test_the_image_holds_every_package() -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, re.M))
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    assert set(packages) <= copied
    assert _compose()["services"]["dashboard"]["ports"] == ["8000:8000"]
