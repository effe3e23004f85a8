"""Walls a process puts around itself before it takes hostile input: another user, no new privileges, and
Landlock (the kernel's own sandbox: which files it may open, no TCP connect or bind, no signals out).

Each wall is entered in order and reported as it stands; none is skipped silently. The order matters:
the user is dropped first (all threads switch), then ``no_new_privs`` and Landlock, before the caller starts
any thread of its own, since Landlock binds the calling thread and the threads it starts afterwards only.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from agentlog.deploy.errors import StackError

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # x86_64 and aarch64 alike
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_V1 = (1 << 13) - 1  # execute .. make_sym
_FS_BY_ABI = {1: _FS_V1, 2: _FS_V1 | 1 << 13, 3: _FS_V1 | 3 << 13, 4: _FS_V1 | 3 << 13}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | (1 << 14)  # rights a rule on a file (not a folder) may carry

SANDBOX_USER = "agentlog-sql"
"""The user that runs analysts' SQL: owns the analytics store and nothing else."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass
class Walls:
    """What stands around the process: each wall that is up, and each that could not be had and why."""

    up: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def landlock(self) -> bool:
        return any(wall.startswith("landlock") for wall in self.up)

    @property
    def enough(self) -> bool:
        """At least the file wall (Landlock) or another user: a query cannot reach the secrets."""
        return self.landlock or any(wall.startswith("user ") for wall in self.up)

    def describe(self) -> str:
        said = ", ".join(self.up) or "no wall"
        return said + (f" (missing: {'; '.join(self.missing)})" if self.missing else "")


def sandbox_user() -> str | None:
    """The user analysts' SQL runs as when we are root (created if missing); None when we are not root."""
    return system_user(SANDBOX_USER)


def system_user(name: str) -> str | None:
    """``name``, a system user with no home and no shell, created if missing, when we are root; else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
    return name


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where it has none (or it is turned off)."""
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def enter(*, user: str | None, writable: list[Path], readable: list[Path]) -> Walls:
    """Put the walls up around this process: run as ``user`` (when given), then open nothing but
    ``writable`` (read and write, beneath each) and ``readable`` (read and execute), connect and bind no TCP
    port, signal no process outside. Call before starting any thread; already-open descriptors stay usable
    (a listening socket bound before, the working directory, say)."""
    walls = Walls()
    beneath = [(_opened(path), True) for path in writable] + [(_opened(path), False) for path in readable]
    try:  # the paths are opened first, as started: the new user may not pass through their parents
        if user is not None:
            entry = pwd.getpwnam(user)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            walls.up.append(f"user {user}")
        elif os.geteuid() == 0:
            walls.missing.append("still root")
        else:
            walls.up.append(f"user {pwd.getpwuid(os.geteuid()).pw_name} (not root, as started)")
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise StackError(f"walls: prctl(NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
        walls.up.append("no new privileges")
        abi = landlock_abi()
        if abi == 0:
            walls.missing.append("landlock (the kernel has none)")
            return walls
        _landlock(libc, abi, beneath)
    finally:
        for fd, _ in beneath:
            if fd is not None:
                os.close(fd)
    walls.up.append(f"landlock v{abi}: files beneath {len(writable)} writable and {len(readable)} readable paths"
                    + (", no TCP connect or bind" if abi >= 4 else "") + (", no signals out" if abi >= 6 else ""))
    return walls


def _opened(path: Path) -> int | None:
    try:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # nothing there to allow


def _landlock(libc: ctypes.CDLL, abi: int, beneath: list[tuple[int | None, bool]]) -> None:
    handled = _FS_BY_ABI.get(abi, _FS_V1 | 7 << 13)  # v5 on: ioctl on devices too
    attr = _RulesetAttr(handled, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise StackError(f"walls: landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}")
    try:
        for fd, writable in beneath:
            if fd is None:
                continue
            access = handled if writable else _EXECUTE | _READ_FILE | _READ_DIR
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                access &= _FILE_ONLY
            rule = _PathBeneathAttr(access, fd)
            if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                raise StackError(f"walls: landlock_add_rule failed: {os.strerror(ctypes.get_errno())}")
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise StackError(f"walls: landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)


def hand_over(path: Path, user: str | None) -> None:
    """Make ``path`` (recursively) owned by ``user`` and its ancestors traversable (search bit only, no listing)."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    traversable(path)


def traversable(path: Path) -> None:
    """Let other users pass through ``path``'s ancestors (search bit only, no listing)."""
    for parent in path.absolute().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
