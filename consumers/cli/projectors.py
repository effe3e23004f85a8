"""The commands that run projectors and write the read models: project, rebuild, and lag (how far behind they are)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.cli.progress import follow, show
from agentlog.consumers.operations.read_models import ReadModels
from agentlog.consumers.operations.rebuild import rebuild as rebuild_model
from agentlog.consumers.runtime import Projector, RunStats, collector
from agentlog.consumers.runtime import prometheus as runtime_prometheus
from agentlog.consumers.runtime.exporter import serve_metrics
from agentlog.consumers.runtime.lag import lag as projection_lag
from agentlog.consumers.runtime.lag import log_size
from agentlog.consumers.runtime.projectors import ProjectorThreads
from agentlog.consumers.runtime.supervisor import Supervisor, watch_parent
from agentlog.deploy.settings import Settings, settings
from agentlog.projections.registry import NAMES
from agentlog.schemas.errors import AgentlogError


def _names(only: Optional[str]) -> list[str]:
    if only is None:
        return list(NAMES)
    if only not in NAMES:
        raise AgentlogError(f"--only {only!r}: choose one of {', '.join(NAMES)}")
    return [only]


@app.command()
def project(only: Optional[str] = typer.Option(None, "--only", help="dashboard, search or analytics."),
            until_caught_up: bool = typer.Option(False, "--until-caught-up",
                                                 help="Stop once every partition is at the end of the log."),
            processes: int = typer.Option(1, "--processes", min=1, max=64,
                                          help="With --only: run N members of the projection's consumer group."),
            metrics_port: Optional[int] = typer.Option(None, "--metrics-port", min=0, max=65535,
                                                       help="Serve Prometheus metrics on this port (all addresses), to the bearer of AGENTLOG_METRICS_TOKEN."),
            status_file: Optional[str] = typer.Option(None, "--status-file", hidden=True,
                                                      help="Write what this process applied here (a supervisor reads it).")
            ) -> None:
    """Run the projectors, each in a process of its own: the log into Postgres, Elasticsearch and ClickHouse."""
    names = _names(only)
    current = settings()
    if processes > 1 and only is None:
        raise AgentlogError(f"--processes {processes}: say which projection with --only NAME")
    if metrics_port is not None:
        _serve_metrics(metrics_port)
    run = _Projecting(current, names, processes, until_caught_up, Path(status_file) if status_file else None)
    signal.signal(signal.SIGTERM, lambda *_: run.stop.set())  # finish the batch in hand, commit, leave
    if status_file:
        watch_parent(run.stop)  # a supervised child: it does not outlive its supervisor
    behind = projection_lag(current, names) if until_caught_up else {}
    run.start()
    try:
        if until_caught_up:
            show({name: (sum(behind[name].values()), partial(run.applied, name)) for name in names},
                 until=lambda: not run.running())
        else:
            with console.status(f"projecting into {', '.join(names)}, one process each (Ctrl-C to stop)"):
                while run.running():
                    time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        run.finish()
    run.report()


class _Projecting:
    """What ``project`` runs: one projection alone as threads of this process, or each in a supervised
    process of its own."""

    def __init__(self, current: Settings, names: list[str], processes: int, until_caught_up: bool,
                 status_file: Path | None) -> None:
        here = names if len(names) == 1 and processes == 1 else []
        others = [n for n in names if n not in here]
        self.processes = processes
        self.until_caught_up = until_caught_up
        self.threads = ProjectorThreads(current, here, until_caught_up=until_caught_up) if here else None
        self.supervisor = Supervisor(others, processes=processes, until_caught_up=until_caught_up) if others else None
        self.writer = _StatusWriter(status_file, self.threads) if status_file and self.threads else None
        self.stop = threading.Event()
        self.results: dict[str, RunStats] = {}
        self.started = time.monotonic()

    def start(self) -> None:
        collector.settle()  # a process that projects: see consumers.runtime.collector
        if self.supervisor is not None:
            self.supervisor.start()
        if self.threads is not None:
            self.threads.start()
        if self.writer is not None:
            self.writer.start()

    def applied(self, name: str) -> int:
        if self.threads is not None and name in self.threads.projectors:
            return self.threads.projectors[name].stats.events
        return int(self.supervisor.status()[name]["events"]) if self.supervisor is not None else 0

    def running(self) -> bool:
        if self.stop.is_set():
            return False
        return bool((self.threads and self.threads.running()) or (self.supervisor and self.supervisor.running()))

    def finish(self) -> None:
        if self.threads is not None:
            self.threads.stop.set()
        if self.supervisor is not None:
            self.supervisor.terminate()
        try:
            self.results = self.threads.join() if self.threads is not None else {}
        finally:
            if self.writer is not None:
                self.writer.close()

    def report(self) -> None:
        seconds = time.monotonic() - self.started
        for name, stats in self.results.items():
            console.print(f"{name}: {stats.events} events in {stats.batches} batches, {stats.dead_letters} dead "
                          f"letters, {stats.retries} retries ({seconds:.1f}s)")
        if self.supervisor is None:
            return
        plural = "es" if self.processes > 1 else ""
        for name, state in self.supervisor.status().items():
            each = f" ({' + '.join(str(n) for n in state['members'])})" if self.processes > 1 else ""
            console.print(f"{name}: {self.processes} process{plural}, {state['events']} events{each}, "
                          f"{state['restarts']} restarts ({seconds:.1f}s)")
        failed = self.supervisor.failed()
        if self.until_caught_up and failed:
            raise AgentlogError(f"{failed[0].name}: a projector process exited with {failed[0].last_exit}; "
                                "see its output above")


def _serve_metrics(port: int) -> None:
    token = settings().metrics_token
    if not token:
        raise AgentlogError(f"--metrics-port {port}: set AGENTLOG_METRICS_TOKEN to the bearer token "
                            "Prometheus will send; the metrics are served to no one without it")
    try:
        serve_metrics(port, token)
    except OSError as exc:
        raise AgentlogError(f"--metrics-port {port}: {exc.strerror}; pick another port") from None


class _StatusWriter:
    """Writes what this process's projector applied to a file, twice a second, for the supervisor."""

    def __init__(self, path: Path, threads: ProjectorThreads) -> None:
        self.path = path
        self.threads = threads
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="projector-status", daemon=True)

    def start(self) -> "_StatusWriter":
        self.thread.start()
        return self

    def _write(self) -> None:
        stats = [p.stats for p in self.threads.projectors.values()]
        lag = {sample.labels["partition"]: sample.value for metric in runtime_prometheus.LAG.collect()
               for sample in metric.samples}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({
            "events": sum(s.events for s in stats), "batches": sum(s.batches for s in stats),
            "retries": sum(s.retries for s in stats), "dead_letters": sum(s.dead_letters for s in stats),
            "lag": lag, "pid": os.getpid()}))
        temporary.replace(self.path)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self._write()
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        try:
            self._write()
        except OSError:
            pass


@app.command()
def lag(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Per projection, per partition: how many events it has still to apply."""
    result = ReadModels(settings()).lag()
    if as_json:
        print_json(result)
        return
    table = Table("projection", *[f"p{p}" for p in next(iter(result.values()))], "total")
    for name, parts in result.items():
        table.add_row(name, *[str(n) for n in parts.values()], str(sum(parts.values())))
    console.print(table)


@app.command()
def rebuild(name: str = typer.Argument(..., help="dashboard, search or analytics."),
            force: bool = typer.Option(False, "--force", help="Swap the new version in even if it differs from "
                                                               "the log (logged).")) -> None:
    """Replay the whole log into a new version of a read model, verify it against the log, then swap it in
    atomically; on any difference the old version goes on serving."""
    _names(name)
    projectors: list[Projector] = []
    result = follow(lambda: rebuild_model(settings(), name, watch=projectors.append, force=force),
                    {name: (log_size(settings()), lambda: sum(p.stats.events for p in projectors))})
    checked = ("not verified (--force)" if result.verified is None
               else f"{result.verified:,} conversations verified against the log")
    console.print(f"{name} rebuilt from {result.events} events in {result.seconds:.1f}s, {checked}, and swapped in "
                  f"(replaced {result.replaced})")