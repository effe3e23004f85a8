"""The red-team corpus: every way found to make analysts' SQL reach the host, tried twice.

1. Through the whole box (the parser and the walls): each statement is refused with one line (the older
   escapes of ``test_sql_box.HOSTILE`` are refused there, each with its reason).
2. With the parser switched off (an engine started ``unchecked``, tests only) against the engine process
   alone: the statement may run, but no host file, secret or other process's environment comes back.
A control run in a plain chDB process, as root and unwalled (what the box ran in before), shows the same
statements do read those files, so the second half could fail.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from agentlog.deploy import clients, engine, walls
from agentlog.deploy.settings import Settings
from agentlog.projections import analytics
from agentlog.projections.analytics.queries import NotReadOnly, QueryFailed, SQLBox
from tests.projections.analytics.test_sql_box import HOSTILE, OUT

SHADOW = "/etc/shadow"


def _corpus(secrets: Path) -> list[str]:
    key, credentials = secrets / "master.key", secrets / "credentials.json"
    return [
        # column transformers: the function has no name in the tree
        "SELECT * APPLY(file) FROM (SELECT '/etc/passwd' AS p)",
        f"SELECT * APPLY(file) APPLY(length) FROM (SELECT '{SHADOW}' AS p)",
        f"SELECT * APPLY(file) APPLY(SHA256) APPLY(hex) FROM (SELECT '{key}' AS p)",
        f"SELECT COLUMNS('p') APPLY(file) FROM (SELECT '{credentials}' AS p)",
        f"SELECT * APPLY file FROM (SELECT '{key}' AS p)",
        f"SELECT * EXCEPT (q) REPLACE (file(p) AS p) FROM (SELECT '{SHADOW}' AS p, 1 AS q)",
        # a function called from inside another: lambdas, higher-order functions, aliases, combinators
        f"SELECT arrayMap(x -> file(x), ['{key}'])",
        f"SELECT arrayFold((acc, x) -> concat(acc, file(x)), ['{credentials}'], '')",
        f"WITH x -> file(x) AS f SELECT f('{SHADOW}')",
        f"WITH file('{key}') AS f SELECT hex(f)",
        f"SELECT anyIf(file('{credentials}'), 1)",
        f"SELECT quantile(0.5)(length(file('{SHADOW}')))",
        f"SELECT arrayReduce('any', [file('{key}')])",
        f"SELECT 1 FROM numbers(1) WHERE file('{SHADOW}') != ''",
        # table functions and other tables
        f"SELECT * FROM file('{SHADOW}', 'LineAsString')",
        f"SELECT * FROM file('{credentials}', 'RawBLOB')",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT _path, line FROM file('/etc/pass*', 'LineAsString', 'line String')",  # a glob, read in parallel
        f"SELECT * FROM file('/proc/{os.getpid()}/environ', 'RawBLOB')",  # this root test process's
        "SELECT file('/proc/self/environ')",
        "SELECT * FROM url('http://127.0.0.1:9200/', 'RawBLOB')",
        "SELECT * FROM executable('cat /etc/shadow', 'TSV', 'x String')",
        "SELECT * FROM system.settings",
        # introspection and server facts
        "SELECT getServerSetting('path')",
        "SELECT hasColumnInTable('system', 'tables', 'name')",
        "SELECT hostName()", "SELECT getOSKernelVersion()", "SELECT buildId()", "SELECT logTrace('x')",
        "SELECT addressToLine(toUInt64(1))",
        "SELECT dictGet('d', 'a', toUInt64(1))",
        "SELECT {p:String}",
    ]


def _secrets(stack: Settings) -> list[bytes]:
    """What must never come back: the stack's secrets (and their hash), /etc/shadow, a root process's environment."""
    found = []
    for path in (stack.stack_dir / "secrets" / "master.key", stack.stack_dir / "secrets" / "credentials.json",
                 Path(SHADOW), Path(f"/proc/{os.getpid()}/environ")):
        data = path.read_bytes()
        found += [data[:64], hashlib.sha256(data).hexdigest().upper().encode(),
                  hashlib.sha256(data).hexdigest().encode()]
    return [s for s in found if s]


@pytest.fixture
def unchecked(stack: Settings, tmp_path: Path):
    """An engine whose SQL box parser is off, on a store of its own: only its walls stand."""
    path = tmp_path / "clickhouse"
    engine.start(path, idle=120, unchecked=True)
    own = replace(stack, clickhouse_url=f"chdb://{path}")
    client = clients.clickhouse(own, analyst=True, engine_settings={"max_execution_time": 10})
    yield client, engine.running(path)
    client.close()
    engine.stop(path)


def test_the_whole_box_refuses_every_escape(box: SQLBox, stack: Settings) -> None:
    for statement in _corpus(stack.stack_dir / "secrets"):
        with pytest.raises((NotReadOnly, QueryFailed)) as refused:
            box.run(statement)
        assert "\n" not in str(refused.value), statement


def test_with_the_parser_off_the_engine_returns_no_host_file_or_secret(unchecked, stack: Settings) -> None:
    client, endpoint = unchecked
    secrets = _secrets(stack)
    answered = 0
    OUT.unlink(missing_ok=True)
    for statement in [*_corpus(stack.stack_dir / "secrets"), *(s for s, _ in HOSTILE)]:
        try:
            data = client.raw_query(statement, fmt="TabSeparated")
        except Exception as exc:  # refused by the engine: a wall held (or ClickHouse found it wrong)
            text = str(exc)
            assert not any(s.decode(errors="replace") in text for s in secrets), statement
            continue
        answered += 1
        assert not any(s in data for s in secrets), f"{statement} returned a secret"
        if walls.landlock_abi():  # /etc/passwd is anyone's to read: only Landlock closes it
            assert b"root:" not in data, f"{statement} read /etc/passwd or /etc/shadow"
    assert answered > 0  # the parser really was off: some statements ran
    assert not OUT.exists(), "INTO OUTFILE wrote a file"


def test_the_engine_cannot_open_the_files_the_old_box_could(unchecked, stack: Settings) -> None:
    """Each file, read by a plain unwalled chDB as the box used to, then through the walled engine."""
    client, endpoint = unchecked
    files = [SHADOW, str(stack.stack_dir / "secrets" / "master.key"),
             str(stack.stack_dir / "secrets" / "credentials.json"), f"/proc/{os.getpid()}/environ"]
    files += ["/etc/passwd"] if walls.landlock_abi() else []  # anyone's to read: only Landlock closes it
    control = subprocess.run(
        [sys.executable, "-c", "import chdb, sys\nfor f in sys.argv[1:]:\n"
         "    print(chdb.query(f\"SELECT length(file('{f}'))\", 'TSV').bytes().decode().strip())", *files],
        capture_output=True, text=True, timeout=120, cwd="/tmp")
    assert control.returncode == 0 and all(int(n) > 0 for n in control.stdout.split()), control.stderr
    for path in files:
        with pytest.raises(Exception, match="Permission denied|CANNOT_OPEN_FILE"):
            client.raw_query(f"SELECT length(file('{path}'))")


def test_the_engine_runs_as_another_user_with_an_empty_environment(unchecked) -> None:
    _, endpoint = unchecked
    status = Path(f"/proc/{endpoint.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert "NoNewPrivs:\t1" in status
    if os.geteuid() == 0:
        assert uid != 0 and "user agentlog-sql" in endpoint.walls
    environ = Path(f"/proc/{endpoint.pid}/environ").read_bytes()
    assert b"AGENTLOG" not in environ and b"PASSWORD" not in environ.upper()
    assert {entry.split("=", 1)[0] for entry in environ.decode().strip("\0").split("\0")} == {
        "PATH", "TZ", "LANG", "HOME"}
    assert endpoint.walled and ("landlock" in endpoint.walls) == bool(walls.landlock_abi())
    limits = Path(f"/proc/{endpoint.pid}/limits").read_text()
    nice = int(next(line for line in limits.splitlines() if line.startswith("Max nice priority")).split()[3])
    yielding = "analysts' SQL at nice 19" in endpoint.walls.split(" (missing:")[0]
    assert yielding == (nice >= 20), (endpoint.walls, nice)  # said only where a thread may come back to nice 0


def test_the_function_list_is_true_to_the_engine(stack: Settings) -> None:
    """Every function the box allows is one the engine has, of the category the list says; none that reads
    outside the query's values is among them."""
    from agentlog.projections.analytics.queries import FUNCTIONS

    client = clients.clickhouse(stack)
    try:
        engine_has = {name: (category, alias) for name, category, alias in client.query(
            "SELECT name, categories, alias_to FROM system.functions").result_rows}
    finally:
        client.close()
    listed = [line.split("\t") for line in (Path(analytics.__file__).parent / "functions.tsv").read_text()
              .splitlines() if line and not line.startswith("#")]
    assert len(listed) > 1000
    missing = [name for name, *_ in listed if name not in engine_has]
    assert not missing, f"functions.tsv names functions the engine does not have: {missing[:10]}"
    for name in ("file", "hostName", "getServerSetting", "hasColumnInTable", "joinGet", "dictGet", "logTrace",
                 "buildId", "getOSKernelVersion", "getSetting", "currentUser", "arrayReduce", "sleep",
                 "initializeAggregation", "catboostEvaluate", "addressToLine", "getMacro", "filesystemAvailable"):
        assert not FUNCTIONS.allows(name), name
    for name in ("sum", "sumIf", "uniqExactArrayIf", "quantileOrNull", "toStartOfHour", "JSONExtractString",
                 "COUNT", "arrayMap", "if", "in", "lambda"):
        assert FUNCTIONS.allows(name), name


def test_an_engine_stops_when_idle_or_when_its_store_is_removed(tmp_path: Path) -> None:
    import shutil
    import time

    def gone(pid: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text():
                return True
            time.sleep(0.2)
        return False

    idle = engine.start(tmp_path / "idle", idle=2)
    assert gone(idle.pid, 30), "an engine idle past its time still runs"
    removed = engine.start(tmp_path / "removed", idle=0)
    shutil.rmtree(tmp_path / "removed")
    assert gone(removed.pid, 30), "an engine whose store was removed still runs"
    if os.geteuid() == 0:  # a parent closed to the engine's user (pytest closes its own base folder so)
        (tmp_path / "closed").mkdir()
        closed = engine.start(tmp_path / "closed" / "store", idle=0)
        (tmp_path / "closed").chmod(0o700)
        assert gone(closed.pid, 30), "an engine whose store is out of its reach still runs"


def test_no_thread_of_the_engine_stays_root(unchecked) -> None:
    """chDB starts threads when it is imported, before the walls go up: the user changes for every thread (Landlock
    binds only the threads started after it, which run the queries, as the corpus above shows)."""
    _, endpoint = unchecked
    tasks = list(Path(f"/proc/{endpoint.pid}/task").iterdir())
    assert len(tasks) > 5
    for task in tasks:
        status = (task / "status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert os.geteuid() != 0 or "0" not in uids, task
