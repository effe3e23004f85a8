"""Background processes of the local stack: start detached, track by pid file, stop.

Elasticsearch refuses to run as root and Postgres's tools do too, so a service can
be started as an unprivileged system user, which is created when missing.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from agentlog.deploy import walls
from agentlog.deploy.errors import StackError

SERVICE_USER = "agentlog"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_local(host: str) -> bool:
    return host in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def service_user() -> str | None:
    """The user services run as: ``agentlog`` when we are root (created if missing), else ourselves."""
    return walls.system_user(SERVICE_USER)


def give_to(user: str | None, *paths: Path) -> None:
    """Make ``paths`` (recursively) owned by ``user`` and their ancestors traversable."""
    for path in paths:
        walls.hand_over(path, user)


def as_user(user: str | None, argv: Sequence[str]) -> list[str]:
    if user is None:
        return list(argv)
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", *argv]


def run(argv: Sequence[str], *, user: str | None = None, env: Mapping[str, str] | None = None,
        cwd: Path | None = None, what: str) -> str:
    """Run a command to completion; a failure becomes a StackError naming ``what`` and its output."""
    try:
        done = subprocess.run(as_user(user, argv), env=dict(env) if env else None, cwd=cwd,
                              capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {argv[0]} is not installed") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise StackError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done.stdout


class Daemon:
    """A detached process whose pid lives in ``pid_file`` and whose output goes to ``log_file``."""

    def __init__(self, name: str, pid_file: Path, log_file: Path) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return None if _zombie(pid) else pid

    def start(self, argv: Sequence[str], *, user: str | None = None, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(as_user(user, argv), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=dict(env) if env else None,
                                    cwd=cwd, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. True if a process was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            _reap(pid)
            time.sleep(0.2)
        if self.pid() is not None:
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.5)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _zombie(pid: int) -> bool:
    """A process that exited and that no parent reaped yet (it still answers signal 0, holds nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(check: Callable[[], object], *, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
