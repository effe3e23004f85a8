"""Fetching what the services need, once, into the cache outside the checkout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from agentlog.deploy.errors import StackError
from agentlog.deploy.local.process import run

HERE = Path(__file__).parent


def ensure_command(command: str, apt_package: str) -> str:
    """The path of ``command``, installing Debian's ``apt_package`` when it is missing."""
    found = shutil.which(command)
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise StackError(f"{command} is missing; install {apt_package} and try again")
    subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", apt_package],
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        what=f"apt-get install {apt_package}")
    found = shutil.which(command)
    if not found:
        raise StackError(f"{command} is still missing after installing {apt_package}")
    return found


def maven(*args: str, what: str) -> None:
    mvn = ensure_command("mvn", "maven")
    run([mvn, "-q", "-B", *args], what=what)


def done_marker(directory: Path) -> Path:
    return directory / ".complete"


def fetched(directory: Path) -> bool:
    return done_marker(directory).exists()
