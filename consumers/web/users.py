"""User and token management for admins: ``/api/users`` and ``/api/tokens`` (the CLI's ``user`` and ``token``)."""

from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import APIRouter, Body, Request
from starlette.concurrency import run_in_threadpool

from agentlog.consumers.web.api import JSON
from agentlog.consumers.web.auth import AuthStore, UnknownName, expiry
from agentlog.schemas.errors import AgentlogError

router = APIRouter(prefix="/api", default_response_class=JSON)


def _store(request: Request) -> AuthStore:
    found: AuthStore = request.app.state.auth
    return found


def _fields(body: Any, *names: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not all(isinstance(body.get(n), str) for n in names):
        raise AgentlogError(f"the body must be JSON with {', '.join(repr(n) for n in names)} as strings")
    return body


@router.get("/users")
async def users(request: Request) -> JSON:
    return JSON(await run_in_threadpool(_store(request).users))


@router.post("/users")
async def add_user(request: Request, body: Annotated[Any, Body()]) -> JSON:
    """Add a user: ``{"name": ..., "role": ...}``; the answer holds its password, shown this once."""
    fields = _fields(body, "name", "role")
    password = await run_in_threadpool(_store(request).add_user, fields["name"], fields["role"])
    return JSON({"name": fields["name"], "role": fields["role"], "password": password}, status_code=201)


async def _end(action: Callable[[str], None], name: str, done: str) -> JSON:
    """Remove a user or revoke a token: 404 with one line when there is none of that name."""
    try:
        await run_in_threadpool(action, name)
    except UnknownName as exc:
        return JSON({"detail": str(exc)}, status_code=404)
    return JSON({done: name})


@router.delete("/users/{name}")
async def remove_user(request: Request, name: str) -> JSON:
    return await _end(_store(request).remove_user, name, "removed")


@router.get("/tokens")
async def tokens(request: Request) -> JSON:
    return JSON(await run_in_threadpool(_store(request).tokens))


@router.post("/tokens")
async def create_token(request: Request, body: Annotated[Any, Body()]) -> JSON:
    """A new token: ``{"role": ..., "name": optional, "expires": optional like "30d"}``, shown this once."""
    fields = _fields(body, "role")
    name, token = await run_in_threadpool(lambda: _store(request).create_token(
        fields["role"], name=fields.get("name") or None, expires=expiry(fields.get("expires"))))
    return JSON({"name": name, "role": fields["role"], "token": token}, status_code=201)


@router.delete("/tokens/{name}")
async def revoke_token(request: Request, name: str) -> JSON:
    return await _end(_store(request).revoke_token, name, "revoked")
