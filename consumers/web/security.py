"""What every answer of the web application carries, and what every request must show.

- Security headers on every answer: a Content-Security-Policy that runs only our own scripts,
  ``X-Frame-Options: DENY``, ``nosniff``, a same-origin referrer.
- The ``Host`` header must name this server (no DNS rebinding): the address it listens on,
  ``localhost``, ``127.0.0.1``, ``[::1]`` and the names in ``AGENTLOG_ALLOWED_HOSTS``.
- A request that runs a query or changes state is a POST another site cannot forge: the JSON API
  takes only ``application/json`` bodies (a cross-site form or image cannot send one), a page's form
  carries the token of its ``agentlog_csrf`` cookie, and a request whose ``Origin`` is another site
  is refused.
"""

from __future__ import annotations

import hmac
import os
import secrets
from urllib.parse import parse_qs, urlsplit

from fastapi import Request
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentlog.schemas.errors import AgentlogError

CSRF_COOKIE = "agentlog_csrf"
CSRF_FIELD = "csrf"
MAX_BODY = 1 << 20
"""Bytes of a request's body: a statement, a form (the SQL box takes 100,000 characters)."""
MAX_EXPORT = 8 << 20
"""Bytes of an OTLP export's body (``/v1/``): the exporters batch hundreds of spans."""


def _too_large(limit: int) -> str:
    return f"the request's body is larger than {limit:,} bytes; send less"
HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
_DOCS_CSP = (b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
             b"style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
             b"frame-ancestors 'none'")
_SAFE = {"GET", "HEAD", "OPTIONS"}


class Forbidden(AgentlogError):
    """A request another site may have forged."""




def allowed_hosts(host: str) -> list[str]:
    names = {"localhost", "127.0.0.1", "[::1]", "::1", host.strip("[]"), f"[{host.strip('[]')}]" if ":" in host else host}
    names |= {name.strip() for name in os.environ.get("AGENTLOG_ALLOWED_HOSTS", "").split(",") if name.strip()}
    return sorted(names - {"0.0.0.0", "::", "[::]"})


def secure(app: ASGIApp, *, host: str) -> ASGIApp:
    """``app`` behind the Host check, the cross-site check and the security headers."""
    return SecurityHeaders(CrossSite(TrustedHostMiddleware(app, allowed_hosts=allowed_hosts(host))))


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] == "/api/docs"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in {n for n, _ in HEADERS}]
                for name, value in HEADERS:
                    headers.append((name, _DOCS_CSP if docs and name == b"content-security-policy" else value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class CrossSite:
    """Refuses, with 403 and one line, an unsafe request from another site or a JSON API call that is no JSON;
    with 413, a body larger than MAX_BODY (said by its Content-Length, or counted while it arrives)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE:
            problem = _cross_site(scope)
            if problem:
                await JSONResponse({"detail": problem}, status_code=403)(scope, receive, send)
                return
            headers = dict(scope.get("headers", []))
            length = headers.get(b"content-length")
            limit = MAX_EXPORT if scope["path"].startswith("/v1/") else MAX_BODY
            if length is not None and (not length.isdigit() or int(length) > limit):
                await JSONResponse({"detail": _too_large(limit)}, status_code=413)(scope, receive, send)
                return
            if length is None:  # sent in chunks: read up to the limit here, then hand it on
                body = await _read_bounded(receive, limit)
                if body is None:
                    await JSONResponse({"detail": _too_large(limit)}, status_code=413)(scope, receive, send)
                    return
                receive = _replay(body)
        await self.app(scope, receive, send)


async def _read_bounded(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes ``limit``."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _cross_site(scope: Scope) -> str | None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    origin = headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != headers.get("host", ""):
        return f"a request from {origin} may not change anything here; use this server's own pages"
    if origin == "null":
        return "a request from an opaque origin may not change anything here"
    if scope["path"].startswith("/api/"):
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            return f"send the body as JSON (Content-Type: application/json), not {kind or 'no content type'}"
    return None


def csrf_token(request: Request) -> str:
    """This browser's token: the cookie's value, or a new one (the page sets the cookie)."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def set_csrf_cookie(response: Response, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")


async def form(request: Request) -> dict[str, str]:
    """A page's posted form, once its token matched the cookie's; Forbidden otherwise."""
    body = await request.body()  # at most MAX_BODY: CrossSite stops a larger one
    try:
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        raise Forbidden("the form is not UTF-8") from None
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, fields.get(CSRF_FIELD, "")):
        raise Forbidden("the form's token does not match this browser's; reload the page and send it again")
    return fields
