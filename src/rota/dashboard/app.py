"""The dashboard's ASGI app: ``create_app(store_url, token)``.

Routes: ``/`` (the single-page UI), ``/static/*``, ``/login``, ``/logout``, ``/api/*`` (see
``openapi.py``), ``/metrics``. Every one of them but ``/login`` and the stylesheet needs
the token (bearer header or session cookie) when one is configured; see ``auth.py``.
"""

from __future__ import annotations

import asyncio
import functools
import html
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rota.coord import open_coordinator
from rota.dashboard.api import ORJSONResponse, StorePool, build_routes, error
from rota.dashboard.auth import (
    SAFE_METHODS,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    Auth,
    AuthKind,
    Identity,
    same_origin,
)
from rota.dashboard.history import History
from rota.dashboard.metrics import CONTENT_TYPE, render
from rota.dashboard.openapi import openapi_document
from rota.status import collect, redact_url
from rota.store import Store, open_store

log = logging.getLogger("rota.dashboard")
STATIC = Path(__file__).parent / "static"
IDENTITY_KEY = "rota.identity"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make Origin "null"
    (b"cross-origin-resource-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: authentication, CSRF and same-origin checks, security headers."""

    def __init__(
        self, app: ASGIApp, auth: Auth, public: frozenset[str], metrics_public: bool
    ) -> None:
        self.app = app
        self.auth = auth
        self.public = public
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = headers
            await send(message)

        response = self.check(HTTPConnection(scope), scope)
        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def check(self, conn: HTTPConnection, scope: Scope) -> Response | None:
        path: str = scope["path"]
        method: str = scope["method"]
        unsafe = method not in SAFE_METHODS
        if unsafe and not same_origin(conn):
            return error(403, "cross-origin request refused")
        if path in self.public or (self.metrics_public and path == "/metrics"):
            return None
        identity = self.auth.identify(conn)
        if not identity.ok:
            if path.startswith("/api/") or path == "/metrics" or unsafe:
                response = error(401, "authentication required (Authorization: Bearer <token>)")
                response.headers["www-authenticate"] = 'Bearer realm="rota"'
                return response
            return RedirectResponse("/login", status_code=303)
        if unsafe and not self.auth.csrf_ok(conn, identity):
            return error(403, "missing or wrong CSRF token (X-CSRF-Token header)")
        scope[IDENTITY_KEY] = identity
        return None


def _login_page(message: str = "", status_code: int = 200) -> HTMLResponse:
    note = f'<p class="login-error">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rota dashboard: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/style.css"></head>
<body class="login"><form method="post" action="/login" class="login-box">
<h1>rota</h1>{note}
<label for="token">Dashboard token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Sign in</button>
</form></body></html>"""
    return HTMLResponse(body, status_code=status_code, headers={"cache-control": "no-store"})


def create_app(
    store_url: str,
    token: str | None = None,
    *,
    metrics_public: bool = False,
    sample_interval: float = 2.0,
    history_span: float = 1800.0,
    trusted_hosts: list[str] | None = None,
    store_factory: Callable[[str], Store] = open_store,
    secret: bytes | None = None,
    coordinator: str | None = None,
) -> Starlette:
    """The dashboard over the store at ``store_url``.

    ``token``: required for every page and API call (``None``: open access, which the
    ``rota dashboard`` command only allows on a loopback address). ``sample_interval``,
    ``history_span``: how often ``collect()`` is sampled for the charts, and for how long
    samples are kept (history starts when the app starts). ``trusted_hosts``: accepted
    ``Host`` headers (the command sets loopback names in open mode, against DNS rebinding).
    """
    auth = Auth(token, secret=secret)
    pool = StorePool(lambda: store_factory(store_url))
    coord = open_coordinator(coordinator)  # each node's session comes from it (ZooKeeper)
    snapshot = functools.partial(collect, coordinator=coord)
    history = History(
        lambda: store_factory(store_url), snapshot, interval=sample_interval, span=history_span
    )
    display_url = redact_url(store_url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        history.start()
        try:
            yield
        finally:
            await run_in_threadpool(history.stop)
            pool.close()
            coord.close()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    async def login_form(request: Request) -> Response:
        if auth.open:
            return RedirectResponse("/", status_code=303)
        return _login_page()

    async def login(request: Request) -> Response:
        if auth.open:
            return RedirectResponse("/", status_code=303)
        raw = (await request.body())[:4096].decode("utf-8", "replace")
        given = (parse_qs(raw).get("token") or [""])[0]
        if not given or not auth.check_token(given):
            await asyncio.sleep(0.3)  # slow down guessing
            log.warning("dashboard: failed sign-in from %s", request.client)
            return _login_page("Wrong token.", status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            auth.new_session(),
            max_age=SESSION_MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(request: Request) -> Response:
        response = ORJSONResponse({"ok": True})
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def session(request: Request) -> Response:
        identity: Identity = request.scope.get(IDENTITY_KEY, Identity(AuthKind.NONE))
        return ORJSONResponse(
            {
                "auth": identity.kind.value,
                "csrf_token": auth.csrf_token(identity),
                "token_required": not auth.open,
                "store": display_url,
                "history_interval": history.interval,
                "history_span": history.span,
            },
            headers={"cache-control": "no-store"},
        )

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def openapi(request: Request) -> Response:
        return ORJSONResponse(openapi_document())

    async def metrics(request: Request) -> Response:
        try:
            data: dict[str, Any] | None = await pool.run(snapshot)
        except Exception as exc:
            log.warning("metrics: the store did not answer: %s", redact_url(str(exc)))
            data = None
        return Response(render(data), media_type=CONTENT_TYPE)

    routes: list[Route | Mount] = [
        Route("/", index, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/api/session", session, methods=["GET"]),
        Route("/api/openapi.json", openapi, methods=["GET"]),
        *build_routes(pool, history.snapshot, snapshot),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(
            Guard,
            auth=auth,
            public=frozenset({"/login", "/static/style.css", "/favicon.ico"}),
            metrics_public=metrics_public,
        )
    ]
    if trusted_hosts:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("dashboard: %s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, redact_url(f"{type(exc).__name__}: {exc}"))

    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={Exception: server_error},
    )
    app.state.history = history
    app.state.pool = pool
    app.state.auth = auth
    return app


def startup_message(store_url: str, host: str, port: int, token: str | None) -> str:
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    access = (
        "token required (Authorization: Bearer, or sign in at /login)"
        if token
        else f"NO TOKEN: access is open to anyone who can connect to {host}:{port} "
        "(set --token or ROTA_DASHBOARD_TOKEN to require one)"
    )
    return f"rota dashboard on {where} over {redact_url(store_url)}; {access}"


def open_mode_hosts(host: str) -> list[str]:
    """Host headers accepted without a token: loopback names only (against DNS rebinding)."""
    names = {*LOOPBACK_NAMES, host.strip("[]")}
    return sorted(names)


__all__ = ["create_app", "is_loopback", "open_mode_hosts", "startup_message"]
