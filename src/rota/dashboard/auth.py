"""Authentication for the dashboard: a bearer token, or a login form that sets a signed,
HttpOnly, SameSite=Strict session cookie; CSRF protection for every state change.

* ``Authorization: Bearer <token>``: for scripts and Prometheus. Browsers never attach
  it on their own, so it needs no CSRF token.
* Session cookie (after ``POST /login`` with the token): ``<issued>.<nonce>.<hmac>``,
  signed with a key derived from the token, valid for ``SESSION_MAX_AGE`` seconds. Every
  POST made with it must carry ``X-CSRF-Token`` (read from ``GET /api/session``), which is
  an HMAC of the session nonce.
* No token configured (allowed only on a loopback address): access is open, but a POST
  still needs the CSRF token of this process, so another site open in the same browser
  cannot trigger actions.

A POST whose ``Origin`` (or ``Sec-Fetch-Site``) says it comes from another site is refused
whatever the credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

SESSION_COOKIE = "rota_session"
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuthKind(StrEnum):
    NONE = "none"  # not authenticated
    OPEN = "open"  # no token configured: everyone on loopback is let in
    BEARER = "bearer"
    COOKIE = "cookie"


@dataclass(frozen=True, slots=True)
class Identity:
    kind: AuthKind
    session: str | None = None  # the session nonce (cookie sessions)

    @property
    def ok(self) -> bool:
        return self.kind is not AuthKind.NONE


class Auth:
    """Checks credentials and builds/validates session cookies and CSRF tokens."""

    def __init__(self, token: str | None, *, secret: bytes | None = None) -> None:
        self.token = token or None
        if secret is None:
            # Derived from the token, so several dashboard processes sharing a token accept
            # each other's sessions; random when there is no token (open mode).
            secret = (
                hashlib.sha256(b"rota-dashboard-session\x00" + self.token.encode()).digest()
                if self.token
                else secrets.token_bytes(32)
            )
        self._key = secret

    @property
    def open(self) -> bool:
        return self.token is None

    def _sign(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def check_token(self, candidate: str) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def new_session(self, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        nonce = secrets.token_urlsafe(18)
        body = f"{issued}.{nonce}"
        return f"{body}.{self._sign('session:' + body)}"

    def read_session(self, cookie: str, now: float | None = None) -> str | None:
        """The session nonce if ``cookie`` is a valid, unexpired session, else ``None``."""
        parts = cookie.split(".")
        if len(parts) != 3:
            return None
        issued, nonce, sig = parts
        if not hmac.compare_digest(sig, self._sign(f"session:{issued}.{nonce}")):
            return None
        try:
            age = (time.time() if now is None else now) - int(issued)
        except ValueError:
            return None
        if age < -60 or age > SESSION_MAX_AGE:
            return None
        return nonce

    def csrf_token(self, identity: Identity) -> str | None:
        if identity.kind is AuthKind.COOKIE and identity.session:
            return self._sign("csrf:" + identity.session)
        if identity.kind is AuthKind.OPEN:
            return self._sign("csrf:open")
        return None

    def identify(self, conn: HTTPConnection) -> Identity:
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            if self.token is not None and self.check_token(value.strip()):
                return Identity(AuthKind.BEARER)
            if self.token is not None:
                return Identity(AuthKind.NONE)
        if self.token is None:
            return Identity(AuthKind.OPEN)
        cookie = conn.cookies.get(SESSION_COOKIE)
        if cookie:
            nonce = self.read_session(cookie)
            if nonce is not None:
                return Identity(AuthKind.COOKIE, nonce)
        return Identity(AuthKind.NONE)

    def csrf_ok(self, conn: HTTPConnection, identity: Identity) -> bool:
        """Whether a state-changing request carries what it must."""
        if identity.kind is AuthKind.BEARER:
            return True
        expected = self.csrf_token(identity)
        given = conn.headers.get(CSRF_HEADER, "")
        return expected is not None and bool(given) and hmac.compare_digest(given, expected)


def same_origin(conn: HTTPConnection) -> bool:
    """False when the browser tells us the request comes from another site."""
    fetch_site = conn.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = conn.headers.get("origin")
    if origin is None:
        return True  # not a browser, or a same-origin GET/HEAD
    if origin == "null":
        return False
    host = conn.headers.get("host", "")
    parts = urlsplit(origin)
    return bool(host) and parts.netloc.lower() == host.lower() and parts.scheme in ("http", "https")
