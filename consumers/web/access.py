"""Every request shows who it is from, and that one may do what it asks.

A person logs in on ``/login`` and gets a session cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over
TLS); a script sends ``Authorization: Bearer TOKEN`` (``agentlog token create``). Each path needs one
permission (``RULES``); what no rule names still needs someone logged in. A request from nobody is a 401,
one from someone whose role may not is a 403, each with one line; Postgres not answering is a 503.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import escape
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from agentlog.consumers.web.auth import AuthStore, BadCredentials, Permission, Principal
from agentlog.consumers.web.security import Forbidden, csrf_token, form, set_csrf_cookie
from agentlog.deploy.errors import StackError

log = logging.getLogger("agentlog.auth")

SESSION_COOKIE = "agentlog_session"
PUBLIC = frozenset({"/login", "/logout", "/healthz"})
"""What anyone may ask for: the login itself and whether the process answers (exactly these paths), and
the style sheets and scripts under ``STATIC``."""
STATIC = "/static/"
RULES: list[tuple[str, Permission]] = [
    ("/api/users", Permission.USERS),
    ("/api/tokens", Permission.USERS),
    ("/api/docs", Permission.DOCS),
    ("/api/openapi.json", Permission.DOCS),
    ("/api/sql", Permission.ANALYTICS),
    ("/api/charts", Permission.ANALYTICS),
    ("/analytics", Permission.ANALYTICS),
    ("/api/conversations", Permission.CONVERSATIONS),
    ("/api/search", Permission.CONVERSATIONS),
    ("/api/compare", Permission.CONVERSATIONS),
    ("/conversations", Permission.CONVERSATIONS),
    ("/compare", Permission.CONVERSATIONS),
    ("/search", Permission.CONVERSATIONS),
    ("/api/", Permission.DASHBOARD),
    ("/fragments/", Permission.DASHBOARD),
    ("/metrics", Permission.PROMETHEUS),
    ("/v1/", Permission.INGEST),
]
"""The permission a path needs: the first rule whose prefix it has (``/`` itself is the dashboard's)."""

NO_USERS = "no user can log in yet: create the first with `agentlog user add NAME --role admin`"
_NOBODY = ("log in first: open /login in a browser, or send `Authorization: Bearer TOKEN` "
           "(`agentlog token create --role ROLE` makes one)")


def needed(path: str) -> Permission | None:
    """The permission ``path`` needs; None for a path any logged-in principal may ask for."""
    if path == "/":
        return Permission.DASHBOARD
    for prefix, permission in RULES:
        if prefix.endswith("/") and path.startswith(prefix):
            return permission
        if path == prefix or path.startswith(prefix + "/"):
            return permission
    return None


def _public(path: str) -> bool:
    return path in PUBLIC or (path.startswith(STATIC) and ".." not in path)


def _is_api(path: str) -> bool:
    return path.startswith(("/api/", "/metrics", "/v1/"))


class Access:
    """The ASGI layer that authenticates and authorizes every request before the application sees it."""

    def __init__(self, app: ASGIApp, store: AuthStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _public(scope["path"]):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        try:
            principal = await run_in_threadpool(self._principal, scope)
            anyone = principal is not None or await run_in_threadpool(self.store.anyone)
        except StackError as exc:
            await JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})(scope, receive, send)
            return
        if principal is None:
            await _refuse(scope, 401, _NOBODY if anyone else NO_USERS)(scope, receive, send)
            return
        permission = needed(path)
        if permission is not None and not principal.may(permission):
            log.info("%s %s (%s) may not %s %s", principal.kind, principal.name, principal.role.value,
                     scope["method"], path)
            await _refuse(scope, 403, f"the {principal.role.value} role may not use {path}; ask an admin for a "
                                      "role that may")(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _principal(self, scope: Scope) -> Principal | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer":
                return None
            return self.store.token(token.strip())
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and value:
                return self.store.session(value)
        return None


def _refuse(scope: Scope, status: int, line: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="agentlog"'} if status == 401 else {}
    if _is_api(scope["path"]) or scope["method"] != "GET":
        return JSONResponse({"detail": line}, status_code=status, headers=headers)
    if status == 401:  # a browser goes on to the login page at once, and comes back here after it
        target = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        login = escape(f"/login?next={quote(target, safe='')}")
        return HTMLResponse(f'<!doctype html><title>log in · agentlog</title><meta http-equiv="refresh" '
                            f'content="0; url={login}"><p>{escape(line)}</p><p><a href="{login}">log in</a></p>',
                            status_code=401, headers=headers)
    return HTMLResponse(f"<!doctype html><title>forbidden · agentlog</title><p>{escape(line)}</p>"
                        '<p><a href="/">dashboard</a> · <a href="/login">log in as someone else</a></p>',
                        status_code=status)


router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (never another site's address)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _login_page(request: Request, store: AuthStore, *, message: str | None, target: str, status: int) -> Response:
    token = csrf_token(request)
    try:
        anyone = store.anyone()
    except StackError as exc:
        anyone, message, status = True, str(exc), 503
    response = templates.TemplateResponse(request, "login.html", {
        "page": "login", "csrf": token, "message": message, "next": target, "no_users": None if anyone else NO_USERS},
        status_code=status)
    set_csrf_cookie(response, token)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002 (the query's name)
    return _login_page(request, request.app.state.auth, message=None, target=_next(next), status=200)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    store: AuthStore = request.app.state.auth
    try:
        fields = await form(request)
    except Forbidden as exc:
        return _login_page(request, store, message=str(exc), target="/", status=403)
    target = _next(fields.get("next"))
    try:
        _, session = await run_in_threadpool(store.login, fields.get("name", ""), fields.get("password", ""))
    except BadCredentials as exc:
        return _login_page(request, store, message=str(exc), target=target, status=401)
    except StackError as exc:
        return _login_page(request, store, message=str(exc), target=target, status=503)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https", max_age=12 * 3600)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    try:
        await form(request)
    except Forbidden as exc:
        return JSONResponse({"detail": str(exc)}, status_code=403)
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        await run_in_threadpool(request.app.state.auth.logout, session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def principal_of(request: Request) -> Principal | None:
    state: Any = request.scope.get("state", {})
    found: Principal | None = state.get("principal")
    return found
