"""The embedded ClickHouse store (``chdb:///PATH``) is held by one engine process per path, behind walls
(``agentlog.projections.analytics.engine`` says which). Every other process is its client over ClickHouse's
HTTP protocol on loopback: the writer with one token, the SQL box with another.

The first client to need a path starts its engine (under a lock, so two never race); the engine outlives
it and stops after ``IDLE`` seconds without a request (the stack's own engine, started by ``stack up``,
never) or when its store is removed. ``PATH.engine.json`` beside the store (mode 0600, outside the store,
so the engine itself cannot read it) says where it listens, its tokens and its walls.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from agentlog.deploy import walls
from agentlog.deploy.credentials import write_secret
from agentlog.deploy.errors import StackError

MODULE = "agentlog.projections.analytics.engine"
IDLE = 120.0
"""Seconds an engine started on demand waits for a request before it stops."""
_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Endpoint:
    pid: int
    port: int
    writer: str
    analyst: str
    walls: str
    walled: bool

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def record(path: Path) -> Path:
    return path.parent / f"{path.name}.engine.json"


def running(path: Path) -> Endpoint | None:
    """The engine serving ``path``, if one answers."""
    try:
        endpoint = Endpoint(**json.loads(record(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    try:
        with urllib.request.urlopen(f"{endpoint.url}/ping", timeout=2) as response:
            return endpoint if response.read() == b"Ok.\n" else None
    except OSError:
        return None


def ensure(path: Path, *, idle: float = IDLE, unchecked: bool = False) -> Endpoint:
    """The engine serving ``path``: the running one, else one started now."""
    endpoint = running(path)
    if endpoint is not None:
        return endpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.engine.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return running(path) or start(path, idle=idle, unchecked=unchecked)


def start(path: Path, *, idle: float = IDLE, unchecked: bool = False) -> Endpoint:
    """Start an engine on ``path`` and wait until it listens. ``unchecked`` (tests only) turns the SQL box's
    parser off inside it, to show that its walls hold by themselves."""
    stop(path)
    path.mkdir(parents=True, exist_ok=True)
    user = walls.sandbox_user()
    walls.hand_over(path, user)
    writer, analyst = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    config = {"store": str(path), "user": user, "idle": idle, "unchecked": unchecked,
              "writer": hashlib.sha256(writer.encode()).hexdigest(),
              "analyst": hashlib.sha256(analyst.encode()).hexdigest(), "readable": [str(p) for p in _libraries()]}
    log = open(path.parent / f"{path.name}.engine.log", "ab")
    env = {"PATH": "/usr/bin:/bin", "TZ": "UTC", "LANG": "C.UTF-8", "HOME": str(path)}
    proc = subprocess.Popen([sys.executable, "-m", MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log, env=env, cwd=path, close_fds=True, start_new_session=True)
    log.close()
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((json.dumps(config) + "\n").encode())
    proc.stdin.close()
    ready, _, _ = select.select([proc.stdout], [], [], _START_TIMEOUT)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if not line:
        proc.kill()
        raise StackError(f"clickhouse: the engine for {path} did not start; see {log.name}")
    said = json.loads(line)
    endpoint = Endpoint(proc.pid, int(said["port"]), writer, analyst, str(said["walls"]), bool(said["walled"]))
    write_secret(record(path), json.dumps(endpoint.__dict__).encode())
    return endpoint


def stop(path: Path) -> bool:
    """Stop the engine recorded for ``path``. True if one was running."""
    try:
        pid = int(json.loads(record(path).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    record(path).unlink(missing_ok=True)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _exited(pid):
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists() and not _exited(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def _exited(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return True


def _libraries() -> list[Path]:
    """What the engine reads once its walls are up: the interpreter's standard library, the packages it was
    installed with (chDB loads parts of itself late), the system's shared libraries and time zones."""
    import chdb  # where the engine's ClickHouse lives

    return [Path(sys.base_prefix), Path(sys.prefix), Path(chdb.__file__).parent.parent, Path("/usr/lib"),
            Path("/lib"), Path("/lib64"), Path("/usr/share/zoneinfo"), Path("/dev/urandom")]
