"""``pip install agentlog`` with no extra: what an agent's service needs to record events, and nothing of the
read side. A fresh virtualenv installs the checkout, then runs the README's "Recording an agent" example
against the stack; the read side's commands say which extra they need."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentlog.deploy.kafka import read_to_end
from agentlog.deploy.settings import Settings
from agentlog.schemas import Codec
from tests.conftest import ROOT, env_of
from tests.producers.test_sdk_imports import READ_SIDE

pytestmark = pytest.mark.slow
LIMIT = 80 << 20
"""Bytes the install may take, pip's own packages aside."""
PIPS = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth"}


def _example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Recording an agent", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _size(site: Path) -> int:
    return sum(path.stat().st_size for top in site.iterdir() if top.name.split("-")[0] not in PIPS
               for path in ([top] if top.is_file() else top.rglob("*")) if path.is_file())


def test_a_bare_install_records_the_readme_example_and_holds_nothing_of_the_read_side(isolated: Settings,
                                                                                      tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    [site] = (venv / "lib").glob("python3*/site-packages")
    size = _size(site)
    found = subprocess.run([str(python), "-c", "import importlib.util, json; print(json.dumps([m for m in "
                            f"{READ_SIDE!r} if importlib.util.find_spec(m)]))"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert json.loads(found.stdout) == [], found.stdout + found.stderr
    assert size < LIMIT, f"the bare install takes {size / 2**20:.0f} MiB"

    env = {**os.environ, **env_of(isolated), "AGENTLOG_STACK_DIR": str(isolated.stack_dir)}
    ran = subprocess.run([str(python), "-c", _example()], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    codec = Codec()
    events = [codec.decode(m.value()) for m in read_to_end(isolated, isolated.events_topic)]
    assert [e.event_type.value for e in events][:3] == ["conversation_started", "tool_called", "tool_result"]
    assert {e.agent_name for e in events} >= {"triage-agent"}

    cli = venv / "bin" / "agentlog"
    bare = subprocess.run([str(cli), "spool", "status"], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    said = (bare.stdout + bare.stderr).strip()
    assert bare.returncode == 1 and len(said.splitlines()) == 1 and "pip install 'agentlog[cli]'" in said, said

    more = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "typer>=0.12", "rich>=13"],
                          capture_output=True, text=True, timeout=600)
    assert more.returncode == 0, more.stderr[-2000:]  # what the cli extra adds
    spool = subprocess.run([str(cli), "spool", "status", "--json"], env=env, capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert spool.returncode == 0, spool.stderr
    serve = subprocess.run([str(cli), "serve"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    said = (serve.stdout + serve.stderr).strip()
    assert serve.returncode == 1 and len(said.splitlines()) == 1, said
    assert "pip install 'agentlog[server]'" in said
    print(f"\nbare install: {size / 2**20:.1f} MiB")
