"""``agentlog spool status | flush``: what the producer SDK keeps on this machine while the broker is away."""

from __future__ import annotations

import asyncio
import threading
import time

import typer
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.cli.progress import show
from agentlog.deploy.settings import settings
from agentlog.producers import EventLog
from agentlog.producers.errors import BrokerUnavailable
from agentlog.producers.spool.status import Status, describe, status
from agentlog.schemas.errors import AgentlogError

spool_app = typer.Typer(no_args_is_help=True,
                        help="The events the producer SDK spooled while the broker was away: see them, send them.")
app.add_typer(spool_app, name="spool")


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) + f" ({_age(time.time() - at)} ago)"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _table(found: Status) -> Table:
    table = Table("directory", "owner", "events", "conversations", "bytes", "oldest")
    for d in found.directories:
        owner = f"[green]process {d.pid or '?'}[/] (sends it)" if d.live else "[yellow]stopped[/] (spool flush sends it)"
        table.add_row(d.path.name, owner, f"{d.figures.events:,}", f"{d.figures.conversations:,}",
                      f"{d.figures.bytes:,}", _when(d.figures.oldest))
    return table


@spool_app.command("status")
def spool_status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Events, conversations, bytes and the oldest event the spool holds, per writing process."""
    found = status(settings().spool_dir)
    if as_json:
        print_json(found.as_json())
        return
    total = found.total
    if not found.directories:
        console.print(f"the spool at {found.root} is empty")
    else:
        console.print(_table(found))
        console.print(f"{describe(total)} ({total.bytes:,} bytes) in the spool at {found.root}, the oldest "
                      f"spooled {_when(total.oldest)}", soft_wrap=True)
    for d in found.directories:
        for problem in d.problems:
            console.print(f"[yellow]{d.path.name}:[/] {problem}", soft_wrap=True)
    if found.failed:
        console.print(f"[red]{found.failed:,} event(s) the broker refused for good[/] are kept in "
                      f"{found.root / 'failed.log'}", soft_wrap=True)
    if found.dropped:
        console.print(f"[red]{found.dropped:,} more event(s) the broker refused for good were not kept[/]: "
                      f"{found.root / 'failed.log'} reached its limit (look at it, then remove it)", soft_wrap=True)


@spool_app.command("flush")
def flush(timeout: float = typer.Option(120, "--timeout", min=1, help="Seconds to wait for the broker.")) -> None:
    """Send what stopped processes left in the spool now, wait for the broker's acknowledgement, report."""
    config = settings()
    before = status(config.spool_dir)
    live = [d for d in before.directories if d.live]
    waiting = sum(d.figures.events for d in before.directories if not d.live)
    outcome: dict[str, object] = {}

    async def run() -> None:
        log = EventLog(config)
        outcome["log"] = log
        try:
            await log.flush(timeout)
        except BrokerUnavailable as exc:
            outcome["error"] = exc
        finally:
            await log.close()

    worker = threading.Thread(target=lambda: asyncio.run(run()), name="agentlog-spool-flush")
    worker.start()
    while "log" not in outcome and worker.is_alive():
        time.sleep(0.05)
    log = outcome.get("log")
    if isinstance(log, EventLog):
        show({"sent": (waiting, lambda: max(0, waiting - log.spool.events))}, until=lambda: not worker.is_alive(),
             note="waiting for the broker's acknowledgements")
    worker.join()
    after = status(config.spool_dir)
    left = sum(d.figures.events for d in after.directories if not d.live)
    console.print(f"sent {max(0, waiting - left):,} of the {waiting:,} spooled event(s) that stopped processes left; "
                  f"{left:,} remain", soft_wrap=True)
    for d in live:
        console.print(f"process {d.pid or '?'} holds {describe(d.figures)} in {d.path.name}: it sends them itself",
                      soft_wrap=True)
    if "error" in outcome:
        raise AgentlogError(str(outcome["error"]))
