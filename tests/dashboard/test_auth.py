"""Authentication, sessions, CSRF and same-origin checks, and the CLI's refusal to serve
a non-loopback address without a token."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from rota.cli import cli
from rota.dashboard import create_app, is_loopback
from rota.dashboard.auth import SESSION_COOKIE, Auth
from rota.store import open_store
from tests.dashboard.conftest import BEARER, TOKEN, Seed

ORIGIN = {"Origin": "http://testserver"}


def login(client: TestClient) -> str:
    """Sign in through the form; return the CSRF token the page would read."""
    r = client.post("/login", data={"token": TOKEN}, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    session = client.get("/api/session").json()
    assert session["auth"] == "cookie" and session["csrf_token"]
    return str(session["csrf_token"])


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/status",
        "/api/history",
        "/api/jobs",
        "/api/session",
        "/api/openapi.json",
        "/metrics",
        "/static/app.js",
    ],
)
def test_everything_needs_the_token(client: TestClient, path: str) -> None:
    r = client.get(path, follow_redirects=False)
    if path in ("/", "/static/app.js"):
        assert r.status_code == 303 and r.headers["location"] == "/login"
    else:
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get(
        path, headers={"Authorization": "Bearer wrong"}, follow_redirects=False
    ).status_code in (401, 303)
    assert client.get(path, headers=BEARER).status_code == 200


def test_actions_need_the_token(client: TestClient, seeded: Seed) -> None:
    for path in (
        f"/api/jobs/{seeded.dead}/retry",
        f"/api/jobs/{seeded.pending}/cancel",
        "/api/jobs/retry-dead",
    ):
        assert client.post(path).status_code == 401
    assert client.post(f"/api/jobs/{seeded.dead}/retry", headers=BEARER).status_code == 200


def test_login_form_and_cookie_session(client: TestClient, seeded: Seed) -> None:
    form = client.get("/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    assert client.get("/static/style.css").status_code == 200  # the login page's stylesheet
    wrong = client.post("/login", data={"token": "nope"}, headers=ORIGIN)
    assert wrong.status_code == 401 and "Wrong token" in wrong.text
    assert SESSION_COOKIE not in client.cookies
    csrf = login(client)
    assert client.get("/api/status").status_code == 200
    assert client.get("/").status_code == 200
    # a POST with the cookie but without the CSRF token is refused
    r = client.post(f"/api/jobs/{seeded.dead}/retry", headers=ORIGIN)
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = client.post(f"/api/jobs/{seeded.dead}/retry", headers={**ORIGIN, "X-CSRF-Token": "x"})
    assert r.status_code == 403
    ok = client.post(f"/api/jobs/{seeded.dead}/retry", headers={**ORIGIN, "X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["job"]["state"] == "pending"
    # the same token with no Origin header (same-origin fetches may omit it) also works
    r = client.post(f"/api/jobs/{seeded.pending}/cancel", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert client.post("/logout", headers={**ORIGIN, "X-CSRF-Token": csrf}).status_code == 200
    client.cookies.clear()
    assert client.get("/api/status").status_code == 401


def test_cross_origin_posts_are_refused(client: TestClient, seeded: Seed) -> None:
    csrf = login(client)
    path = f"/api/jobs/{seeded.dead}/retry"
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-site"},
    ):
        r = client.post(path, headers={**headers, "X-CSRF-Token": csrf})
        assert r.status_code == 403, headers
        assert "cross-origin" in r.json()["error"]
    # even with a valid bearer token
    assert (
        client.post(path, headers={**BEARER, "Origin": "https://evil.example"}).status_code == 403
    )
    # and the login form cannot be posted from another site
    assert (
        client.post(
            "/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"}
        ).status_code
        == 403
    )


def test_tampered_or_foreign_session_cookie_is_refused(client: TestClient) -> None:
    other = Auth("another-token").new_session()
    client.cookies.set(SESSION_COOKIE, other)
    assert client.get("/api/status").status_code == 401
    good = Auth(TOKEN).new_session()
    issued, nonce, sig = good.split(".")
    client.cookies.set(SESSION_COOKIE, f"{int(issued) + 1}.{nonce}.{sig}")
    assert client.get("/api/status").status_code == 401
    client.cookies.set(SESSION_COOKIE, good)
    assert client.get("/api/status").status_code == 200


def test_session_expires() -> None:
    auth = Auth(TOKEN)
    cookie = auth.new_session(now=1000.0)
    assert auth.read_session(cookie, now=1001.0) is not None
    assert auth.read_session(cookie, now=1000.0 + 13 * 3600) is None


def test_open_mode_without_token(url: str, seeded: Seed) -> None:
    with TestClient(create_app(url, None, sample_interval=0.05)) as c:
        assert c.get("/api/status").status_code == 200
        assert c.get("/").status_code == 200
        assert c.get("/login", follow_redirects=False).status_code == 303
        session = c.get("/api/session").json()
        assert session["auth"] == "open" and session["token_required"] is False
        # another site open in the same browser still cannot act
        assert c.post(f"/api/jobs/{seeded.dead}/retry").status_code == 403
        r = c.post(
            f"/api/jobs/{seeded.dead}/retry", headers={"X-CSRF-Token": session["csrf_token"]}
        )
        assert r.status_code == 200


def test_open_mode_trusted_hosts_block_dns_rebinding(url: str) -> None:
    app = create_app(url, None, trusted_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8080") as c:
        assert c.get("/api/status").status_code == 200
        assert c.get("/api/status", headers={"Host": "evil.example"}).status_code == 400


def test_metrics_public_flag(url: str, seeded: Seed) -> None:
    with TestClient(create_app(url, TOKEN, metrics_public=True)) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/api/status").status_code == 401


def test_store_password_never_shown(url: str, seeded: Seed) -> None:
    secret_url = "postgresql://rota:hunter2@db.example:5432/rota"
    app = create_app(secret_url, TOKEN, store_factory=lambda _u: open_store(url))
    with TestClient(app, headers=BEARER) as c:
        body = c.get("/api/session").text
        assert "hunter2" not in body and "rota:***@db.example" in body
        assert "hunter2" not in c.get("/api/status").text


def test_security_headers(authed: TestClient) -> None:
    r = authed.get("/")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("[::1]") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.1.2.3")
    assert not is_loopback("example.com")


def test_cli_refuses_public_address_without_token(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROTA_DASHBOARD_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["dashboard", "--store", url, "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "without a token" in result.output


def test_cli_serves_with_token(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a token (from the environment) it gets as far as starting uvicorn."""
    import uvicorn

    seen: dict[str, object] = {}

    def fake_run(app: object, **kwargs: object) -> None:
        seen.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setenv("ROTA_DASHBOARD_TOKEN", TOKEN)
    monkeypatch.delenv("ROTA_STORE", raising=False)
    result = CliRunner().invoke(
        cli, ["dashboard", "--store", url, "--host", "0.0.0.0", "--port", "9999"]
    )
    assert result.exit_code == 0, result.output
    assert seen["host"] == "0.0.0.0" and seen["port"] == 9999
    app = seen["app"]
    assert app.state.auth.token == TOKEN  # type: ignore[attr-defined]
