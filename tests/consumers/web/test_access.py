"""Nothing gets in without a key: every route of ``agentlog serve`` asks who is there, and each role may
do its job and no more."""

from __future__ import annotations

import http.cookiejar
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import replace

import pytest

from agentlog.consumers.web.access import NO_USERS, SESSION_COOKIE
from agentlog.consumers.web.auth import AuthStore, BadCredentials
from agentlog.deploy.sandbox import drop, private
from agentlog.deploy.settings import Settings
from tests.conftest import ROOT, agentlog, env_of
from tests.consumers.web.conftest import Served, free_port

PAGES = ["/", "/search?q=refund", "/analytics", "/conversations/conv-8842", "/fragments/overview",
         "/loginx", "/healthz/x", "/static/../api/users"]  # near a public path is not public
API = ["/api/counters", "/api/metrics", "/api/conversations", "/api/search?q=refund", "/api/lag", "/api/health",
       "/api/charts", "/api/conversations/conv-8842", "/api/compare?a=conv-8842&b=conv-8842", "/api/users", "/api/tokens", "/api/docs", "/api/openapi.json",
       "/metrics", "/api/no-such-route"]


def _open(served: Served, path: str, *, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None, opener: urllib.request.OpenerDirector | None = None):
    request = urllib.request.Request(served.url + path, method=method, headers=headers or {}, data=body)
    try:
        response = (opener or urllib.request.build_opener(_NoRedirect)).open(request, timeout=60)
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.parametrize("token", [None, "agentlog_not-a-token", "Basic YWRtaW46YWRtaW4="])
def test_nobody_gets_in_without_a_key(served: Served, token: str | None) -> None:
    headers = {"Authorization": token if token and token.startswith("Basic") else f"Bearer {token}"} if token else {}
    for path in API:
        status, answer_headers, text = _open(served, path, headers=headers)
        assert status == 401, path
        assert json.loads(text)["detail"].startswith("log in first") and "\n" not in text, path
        assert answer_headers["www-authenticate"].startswith("Bearer"), path
    for path in PAGES:
        status, _, text = _open(served, path, headers=headers)
        assert status == 401 and "/login?next=" in text and "Number of conversations" not in text, path
    status, _, text = _open(served, "/api/sql", method="POST", body=b'{"sql": "SELECT 1"}',
                            headers={"Content-Type": "application/json", **headers})
    assert status == 401 and "rows" not in json.loads(text)
    assert _open(served, "/healthz", headers=headers)[:3:2] == (200, '{"ok":true}')  # a probe's, saying nothing


@pytest.mark.parametrize("role, allowed, refused", [
    ("support", ["/api/search?q=refund", "/api/conversations/conv-8842", "/search?q=refund", "/api/docs",
                 "/api/conversations/conv-8842?at=2", "/api/compare?a=conv-8842&b=conv-8842",
                 "/compare?a=conv-8842&b=conv-8842"],
     ["/api/counters", "/analytics", "/api/charts", "/metrics", "/api/users", "/"]),
    ("analyst", ["/api/charts", "/analytics"],
     ["/api/search?q=refund", "/api/conversations/conv-8842", "/api/compare?a=conv-8842&b=conv-8842", "/api/users", "/api/tokens", "/metrics", "/"]),
    ("operator", ["/", "/api/counters", "/api/lag", "/metrics", "/api/search?q=refund"],
     ["/api/charts", "/analytics", "/api/users"]),
    ("agent", [], ["/", "/api/counters", "/api/search?q=refund", "/api/conversations/conv-8842", "/metrics",
                   "/api/docs", "/analytics"]),
])
def test_each_role_may_do_its_job_and_no_more(served: Served, role: str, allowed: list[str],
                                                refused: list[str]) -> None:
    token = served.token_for(role)
    for path in allowed:
        status, _, _ = _open(served, path, headers=served.auth(token))
        assert status == 200, (role, path)
    for path in refused:
        status, _, text = _open(served, path, headers=served.auth(token))
        assert status == 403, (role, path)
        assert f"the {role} role may not use" in text, (role, path)
    status, body = served.post("/api/sql", {"sql": "SELECT 1 AS one"}, token=token)
    assert (status == 200) == (role == "analyst"), (role, body)


def test_a_revoked_token_gets_401_and_an_expiring_one_says_when(served: Served) -> None:
    made = agentlog("token", "create", "--role", "operator", "--name", f"ci-{uuid.uuid4().hex[:6]}",
                    "--expires", "30d", env=served.env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert served.get("/api/counters", token=token)[0] == 200
    name = made.stdout.split("token ", 1)[1].split(" ", 1)[0]
    listed = json.loads(agentlog("token", "list", "--json", env=served.env).stdout)
    (mine,) = [row for row in listed if row["name"] == name]
    assert mine["expires_at"] is not None and mine["revoked_at"] is None and token not in json.dumps(listed)
    assert agentlog("token", "revoke", name, env=served.env).returncode == 0
    status, body = served.get("/api/counters", token=token)
    assert status == 401 and body["detail"].startswith("log in first")
    for given, said in (("0d", "--expires '0d': a token must live a while"),
                        ("soon", "--expires 'soon': use a duration like 30m")):
        refused = agentlog("token", "create", "--role", "operator", "--expires", given, env=served.env)
        assert refused.returncode == 1 and said in refused.stderr and "Traceback" not in refused.stderr


def test_a_person_logs_in_with_a_form_and_a_cookie_the_page_cannot_read(served: Served) -> None:
    name = f"sam-{uuid.uuid4().hex[:6]}"
    added = agentlog("user", "add", name, "--role", "support", env=served.env)
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip().splitlines()[-1]
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    status, _, page = _open(served, "/login?next=%2Fsearch%3Fq%3Drefund", opener=browser)
    assert status == 200 and 'name="csrf"' in page
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]

    def log_in(secret: str, target: str = "/search?q=refund"):
        form = urllib.parse.urlencode({"csrf": csrf, "next": target, "name": name, "password": secret}).encode()
        return _open(served, "/login", method="POST", body=form, opener=browser,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})

    status, _, page = log_in("wrong")
    assert status == 401 and "that name and password do not match a user" in page
    assert SESSION_COOKIE not in {cookie.name for cookie in jar}
    status, headers, _ = log_in(password, target="https://attacker.example/")
    assert status == 303 and headers["location"] == "/"  # never sent on to another site
    status, headers, _ = log_in(password)
    assert status == 303 and headers["location"] == "/search?q=refund"
    cookie = headers["set-cookie"]
    assert SESSION_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert _open(served, "/search?q=refund", opener=browser)[0] == 200
    assert _open(served, "/api/search?q=refund", opener=browser)[0] == 200
    assert _open(served, "/analytics", opener=browser)[0] == 403  # support
    form = urllib.parse.urlencode({"csrf": csrf}).encode()
    status, _, _ = _open(served, "/logout", method="POST", body=form, opener=browser,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303
    assert _open(served, "/api/search?q=refund", opener=browser)[0] == 401
    printed = served.log.read_text() if served.log else ""
    assert f"failed login for '{name}'" in printed and f"login of {name} (support)" in printed
    assert password not in printed


def test_an_admin_manages_users_through_the_api_and_an_analyst_cannot(served: Served) -> None:
    name = f"ana-{uuid.uuid4().hex[:6]}"
    status, made = served.post("/api/users", {"name": name, "role": "analyst"})
    assert status == 201 and len(made["password"]) >= 20
    _, users = served.get("/api/users")
    assert {"name": name, "role": "analyst"}.items() <= next(u for u in users if u["name"] == name).items()
    assert all("password" not in json.dumps(user) for user in users)
    analyst = served.token_for("analyst")
    assert served.post("/api/users", {"name": "mallory", "role": "admin"}, token=analyst)[0] == 403
    status, body = served.post("/api/users", {"name": "bad name; drop", "role": "admin"})
    assert status == 400 and "user name" in body["detail"]
    status, body = served.post("/api/users", {"name": "x", "role": "root"})
    assert status == 400 and "choose one of support, analyst, operator, agent, admin" in body["detail"]
    request = urllib.request.Request(f"{served.url}/api/users/{name}", method="DELETE",
                                     headers={"Content-Type": "application/json", **served.auth()})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_serve_with_no_users_shows_only_how_to_make_the_first(stack: Settings, tmp_path) -> None:
    own = replace(private(stack, uuid.uuid4().hex[:12]), clickhouse_url=f"chdb://{tmp_path}/clickhouse")
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen([sys.executable, "-m", "agentlog.consumers.cli", "serve", "--port", str(port),
                                "--no-projectors"], env={**os.environ, **env_of(own)}, cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        served = Served(f"http://127.0.0.1:{port}", own, env_of(own), "", "", 0, "", ("", ""))
        for _ in range(120):
            try:
                status, _, page = _open(served, "/login")
                break
            except urllib.error.URLError:
                if process.poll() is not None:
                    log.seek(0)
                    pytest.fail(log.read())
                time.sleep(0.5)
        assert status == 200 and "agentlog user add NAME --role admin" in page
        status, _, text = _open(served, "/api/counters")
        assert status == 401 and json.loads(text)["detail"] == NO_USERS
        assert AuthStore(own).users() == []
    finally:
        process.terminate()
        process.wait(60)
        log.close()
        drop(own)


def test_a_login_with_a_name_no_store_takes_or_a_guessed_password_is_refused_without_a_500(served: Served) -> None:
    store = AuthStore(served.settings)
    for name in ("nul\x00name", "x" * 5000, "'; DROP TABLE users; --"):
        with pytest.raises(BadCredentials, match="do not match a user"):
            store.login(name, "whatever")
    name = f"guessed-{uuid.uuid4().hex[:6]}"
    password = store.add_user(name, "support")
    for _ in range(5):
        with pytest.raises(BadCredentials, match="do not match a user"):
            store.login(name, "wrong")
    with pytest.raises(BadCredentials, match="too many failed logins"):
        store.login(name, password)  # even the right one, until the minute is over


def test_a_password_in_a_clickhouse_url_is_never_printed() -> None:
    done = agentlog("stack", "status", "--json",
                    env={"AGENTLOG_CLICKHOUSE_URL": "http://agentlog:hunter2-secret@127.0.0.1:1"})
    assert "hunter2-secret" not in done.stdout + done.stderr
    assert json.loads(done.stdout)["clickhouse"]["address"] == "http://agentlog:***@127.0.0.1:1"


def test_the_lockout_counts_parallel_attempts_and_holds_across_replicas(served: Served) -> None:
    """200 wrong passwords from 50 threads: exactly five are checked; another serve (a second store on the same
    Postgres, as a replica or a restarted process would be) refuses the name too."""
    from concurrent.futures import ThreadPoolExecutor

    store = AuthStore(served.settings)
    name = f"parallel-{uuid.uuid4().hex[:6]}"
    password = store.add_user(name, "support")

    def attempt(_: int) -> str:
        try:
            store.login(name, "wrong")
        except BadCredentials as exc:
            return "checked" if "do not match" in str(exc) else "locked"
        return "in"

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(attempt, range(200)))
    assert outcomes.count("checked") == 5 and outcomes.count("locked") == 195
    with pytest.raises(BadCredentials, match="too many failed logins"):
        AuthStore(served.settings).login(name, password)


def test_a_login_for_an_unknown_name_takes_as_long_as_for_a_known_one(served: Served) -> None:
    store = AuthStore(served.settings)
    known = f"known-{uuid.uuid4().hex[:6]}"
    store.add_user(known, "support")

    def median_seconds(name: str) -> float:
        times = []
        for i in range(4):  # under the lockout: the fifth failure within a minute would lock the name
            started = time.perf_counter()
            with pytest.raises(BadCredentials, match="do not match"):
                store.login(name, f"wrong-{i}")
            times.append(time.perf_counter() - started)
        return sorted(times)[len(times) // 2]

    unknown, found = median_seconds(f"nobody-{uuid.uuid4().hex[:6]}"), median_seconds(known)
    assert 0.5 < unknown / found < 2.0, f"unknown {unknown * 1000:.0f} ms, known {found * 1000:.0f} ms"
