"""Progress bars for long work: projecting until caught up, rebuilding a read model."""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentlog.consumers.cli.app import console

T = TypeVar("T")
Bars = Mapping[str, tuple[int, Callable[[], int]]]
"""name -> (events to apply, how many are applied now)."""


def show(bars: Bars, *, until: Callable[[], bool], note: str = "") -> None:
    """One bar per name until ``until()`` holds; off a terminal, a spinner with ``note`` instead."""
    if not console.is_terminal:
        while not until():
            time.sleep(0.2)
        return
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                  TimeElapsedColumn(), TextColumn(note, style="dim"), console=console, transient=True) as progress:
        tasks = {name: progress.add_task(name, total=max(total, 1)) for name, (total, _) in bars.items()}
        while True:
            finished = until()
            for name, (total, done) in bars.items():
                applied = done()
                progress.update(tasks[name], completed=applied, total=max(total, applied, 1))
            if finished:
                return
            time.sleep(0.2)


def follow(work: Callable[[], T], bars: Bars) -> T:
    """Run ``work`` in a thread under ``show``; its result, or its error raised in the caller's thread."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # re-raised below, where the caller can catch it
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="agentlog-work", daemon=True)
    thread.start()
    show(bars, until=lambda: not thread.is_alive())
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
