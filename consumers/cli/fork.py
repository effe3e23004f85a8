"""``agentlog fork``: a new conversation whose first steps are another's, to go on from there."""

from __future__ import annotations

import asyncio
from typing import Optional

import typer

from agentlog.consumers.cli.app import app, console, print_json
from agentlog.deploy.settings import settings
from agentlog.producers import Conversation, EventLog


@app.command()
def fork(conversation_id: str = typer.Argument(..., help="The conversation to fork."),
         at: int = typer.Option(..., "--at", help="The last step to copy: the fork goes on from the next one."),
         new_id: Optional[str] = typer.Option(None, "--id", help="The fork's id (default: a new one)."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Fork a conversation at a step: a new conversation whose steps 1..AT are copies of its (each a new event,
    naming its source), read from the log; an agent records the rest of the run into it."""

    async def run() -> Conversation:
        async with EventLog(settings()) as log:
            return await Conversation.fork(log, conversation_id, at=at, conversation_id=new_id)

    made = asyncio.run(run())
    if as_json:
        print_json({"conversation_id": made.conversation_id, "forked_from_conversation": conversation_id,
                    "forked_from_sequence": at, "next_sequence": made.next_sequence})
        return
    console.print(f"forked {conversation_id} at step {at} into {made.conversation_id}: steps 1 to {at} copied; "
                  f"record from step {made.next_sequence} on (`Conversation(log, conversation_id="
                  f"{made.conversation_id!r}, next_sequence={made.next_sequence}, ...)`)", highlight=False,
                  markup=False, soft_wrap=True)
