"""What an agent loads when it records events: the producer SDK, not the read side's clients."""

from __future__ import annotations

import json
import subprocess
import sys

READ_SIDE = ("chdb", "clickhouse_connect", "pandas", "pyarrow", "elasticsearch", "fastapi", "uvicorn", "jinja2",
             "argon2", "bcrypt")


def test_importing_the_sdk_loads_nothing_of_the_read_side() -> None:
    probe = ("import json, sys\n"
             "from agentlog.producers import Conversation, EventLog, SyncConversation\n"
             f"print(json.dumps([m for m in {READ_SIDE!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
