"""``agentlog forget``: crypto-shred a subject's (or one conversation's) text in the log and in every store."""

from __future__ import annotations

import getpass
from contextlib import nullcontext
from typing import Optional

import typer
from rich.table import Table

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.consumers.operations.forget import forget as forget_subject
from agentlog.deploy.settings import settings


@app.command()
def forget(subject: Optional[str] = typer.Option(None, "--subject", help="Every conversation of this subject."),
           conversation: Optional[str] = typer.Option(None, "--conversation", help="One conversation."),
           by: Optional[str] = typer.Option(None, "--by", help="Who asked (recorded in the log; default: you)."),
           wait: float = typer.Option(60.0, "--wait", help="Seconds to wait for the stores to apply it."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Delete the data keys of a subject's conversations (their text in the log can never be read again),
    record who asked, and erase that text in every store; counts, tokens and costs stay."""
    with console.status("deleting the keys and waiting for the stores...") if not as_json else nullcontext():
        done = forget_subject(settings(), subject=subject, conversation=conversation,
                              requested_by=by or getpass.getuser(), wait=wait)
    if as_json:
        print_json(done.as_json())
        return
    console.print(f"forgot {len(done.conversations)} conversation(s) ({done.deleted} key(s) deleted now, {len(done.key_ids)} in all)",
                  highlight=False)
    table = Table("store", "applied", "conversations erased", "records erased")
    for s in done.stores:
        table.add_row(s.store, "yes" if s.applied else "not yet", str(s.conversations), str(s.records))
    console.print(table)
    for s in done.stores:
        if not s.applied:
            console.print(f"{s.store} has not applied it within {wait:g}s: it erases when its projector runs "
                          "(the key is gone already)" + (f"; it could not be asked: {s.unreachable}"
                                                         if s.unreachable else ""), highlight=False)
    if done.in_clear:
        console.print(f"{', '.join(done.in_clear)}: written without encryption, so the log holds its text in the "
                      "clear and a rebuild brings it back", highlight=False)

