"""docker-compose.yml, the Dockerfile and the Kubernetes manifests run commands and settings that exist."""

from __future__ import annotations

import inspect
import re
import tomllib

import pytest
import yaml

from agentlog.consumers.cli.stack import COMPOSE_SECRETS
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
    assert {" ".join(args[:1]) for _, args, _ in commands} == {"project", "serve", "stack"}
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


def test_compose_publishes_nothing_open_beyond_this_machine() -> None:
    """Every port but the dashboard's (which asks for a login) is bound to the loopback, and every service
    asks for a password taken from .env, none written here."""
    services = _compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert name == "dashboard" or port.startswith("127.0.0.1:"), f"{name} publishes {port}"
    text = (ROOT / "docker-compose.yml").read_text()
    assert "trust" not in text and "change-me" not in text
    for name in COMPOSE_SECRETS:
        assert f"${{{name}:?" in text, name
    postgres, search = services["postgres"]["environment"], services["elasticsearch"]["environment"]
    assert postgres["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert search["xpack.security.enabled"] == "true"
    assert services["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"].startswith("${")
    kafka = (ROOT / "deploy" / "docker" / "kafka.sh").read_text()
    assert "SASL:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT" in kafka and "allow.everyone.if.no.acl.found=false" in kafka
    assert "CONTROLLER://127.0.0.1:" in kafka  # the only listener without a password is the container's own
    for service in services.values():
        env = service.get("environment", {})
        if env.get("AGENTLOG_KAFKA_BOOTSTRAP"):
            assert env["AGENTLOG_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT" and env["AGENTLOG_KAFKA_SASL_PASSWORD"]


def test_the_kubernetes_files_hold_no_password() -> None:
    for path in KUBERNETES:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] != "Secret", f"{path.name}: the Secret is made at install, not shipped"
            assert "PASSWORD" not in str(doc.get("data", {})) and "change-me" not in path.read_text()
    readme = (ROOT / "deploy" / "kubernetes" / "README.md").read_text()
    assert "kubectl create secret generic agentlog" in readme


def test_stack_env_writes_a_compose_env_of_fresh_passwords() -> None:
    first, second = (agentlog("stack", "env", "--compose").stdout for _ in range(2))
    lines = dict(line.split("=", 1) for line in first.strip().splitlines())
    assert set(lines) == set(COMPOSE_SECRETS) and all(len(value) >= 24 for value in lines.values())
    assert first != second


def test_every_package_of_the_tree_is_in_the_distribution() -> None:
    """A package left out of pyproject's list works in the editable install and is missing from the image."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    for name, folder in setuptools["package-dir"].items():
        for marker in (ROOT / folder).rglob("__init__.py"):
            relative = marker.parent.relative_to(ROOT / folder).parts
            assert ".".join((name, *relative)) in listed, marker.parent
