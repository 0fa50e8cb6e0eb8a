"""The web app as an attacker meets it, on the real `studio serve` over HTTP: foreign Host
headers (DNS rebinding), cross-site state changes (CSRF), CORS, logins (rate limits,
cookie flags, logout, disabled users, tokens) and the start-up modes."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from studio.services import accounts
from tests.conftest import ROOT, free_port, make_settings, server_starter, studio_env

pytestmark = pytest.mark.db
PASSWORD = "correct horse battery"


def _engine(settings):
    from studio.db import engine_for

    return engine_for(settings.db_url)


@pytest.fixture(scope="module")
def local_studio(tmp_path_factory, module_processes):
    """No accounts on 127.0.0.1: single-user mode."""
    settings = make_settings(tmp_path_factory.mktemp("local") / "data")
    return settings, server_starter(module_processes)(settings)


@pytest.fixture(scope="module")
def accounts_studio(tmp_path_factory, module_processes):
    settings = make_settings(tmp_path_factory.mktemp("accounts") / "data")
    for name, role in (("ada", "admin"), ("tom", "trainer"), ("rae", "rater")):
        accounts.add_user(_engine(settings), name, role, PASSWORD)
    return settings, server_starter(module_processes)(settings)


def _login(url: str, name: str, password: str = PASSWORD, **headers) -> httpx.Response:
    return httpx.post(f"{url}/login", data={"username": name, "password": password, "next": "/"}, headers=headers)


def test_a_foreign_host_header_is_refused_in_every_mode(local_studio, accounts_studio):
    counts = 0
    for _settings, url in (local_studio, accounts_studio):
        for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example", "localhost.evil", "[::2]"):
            for method, path in (("GET", "/"), ("GET", "/api/health"), ("POST", "/api/jobs"), ("GET", "/config")):
                response = httpx.request(method, url + path, headers={"Host": host})
                assert response.status_code == 400, (host, path, response.status_code)
                assert "STUDIO_ALLOWED_HOSTS" in response.json()["detail"]
                counts += 1
        port = url.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert httpx.get(url + "/api/health", headers={"Host": host}).status_code == 200
    print(f"\nrebinding: {counts} requests with a foreign Host, all 400")


def test_cross_site_state_changes_are_refused(local_studio, tmp_path):
    settings, url = local_studio
    data = tmp_path / "tasks.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    before = httpx.get(url + "/api/datasets").json()
    refused = 0
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Referer": "http://evil.example/page"},
                    {"Origin": "http://127.0.0.1.evil.example"}):
        response = httpx.post(url + "/api/datasets", files={"file": ("tasks.jsonl", data.read_bytes())}, headers=headers)
        assert response.status_code == 403, headers
        response = httpx.post(url + "/gradio_api/upload", files={"files": ("x.py", b"import os")}, headers=headers)
        assert response.status_code == 403, headers
        response = httpx.post(url + "/gradio_api/queue/join", json={"fn_index": 0, "data": [], "session_hash": "x"},
                              headers=headers)
        assert response.status_code == 403, headers
        refused += 3
    assert httpx.get(url + "/api/datasets").json() == before, "a refused cross-site upload was stored"
    # The studio's own page (same origin) and non-browser clients (no Origin) are served.
    same = httpx.post(url + "/api/datasets", files={"file": ("tasks.jsonl", data.read_bytes())}, headers={"Origin": url})
    assert same.status_code == 201, same.text
    print(f"\nCSRF: {refused} cross-site requests refused, 0 stored")


def test_cors_is_off_unless_configured(local_studio, tmp_path_factory, processes):
    _settings, url = local_studio
    for path in ("/api/health", "/config", "/gradio_api/info"):
        response = httpx.get(url + path, headers={"Origin": "http://localhost:9999"})
        assert not any(k.lower().startswith("access-control-") for k in response.headers), (path, response.headers)
    settings = make_settings(tmp_path_factory.mktemp("cors") / "data", cors_origins=["http://tools.example"])
    cors_url = server_starter(processes)(settings)
    response = httpx.get(cors_url + "/api/health", headers={"Origin": "http://tools.example"})
    assert response.headers["access-control-allow-origin"] == "http://tools.example"
    preflight = httpx.options(cors_url + "/api/jobs", headers={"Origin": "http://tools.example",
                                                               "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    other = httpx.get(cors_url + "/api/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_local_mode_needs_no_login_and_says_so(local_studio):
    _settings, url = local_studio
    assert httpx.get(url + "/api/jobs").status_code == 200
    me = httpx.get(url + "/api/me").json()
    assert me == {"name": "local", "role": "admin", "mode": "local"}
    assert httpx.get(url + "/login", follow_redirects=False).status_code == 303


def test_login_sets_a_safe_cookie_and_logout_ends_the_session(accounts_studio):
    _settings, url = accounts_studio
    response = _login(url, "tom")
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # plain http here
    session = response.cookies
    assert httpx.get(url + "/api/me", cookies=session).json()["name"] == "tom"
    assert httpx.post(url + "/logout", cookies=session, headers={"Origin": url}).status_code == 303
    assert httpx.get(url + "/api/me", cookies=session).status_code == 401
    # Behind an https proxy the cookie is Secure.
    proxied = httpx.post(f"{url}/login", data={"username": "tom", "password": PASSWORD},
                         headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in proxied.headers["set-cookie"]


def test_without_login_pages_redirect_and_api_calls_get_401(accounts_studio):
    _settings, url = accounts_studio
    page = httpx.get(url + "/?tab=jobs", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=/")
    for path in ("/api/jobs", "/api/datasets", "/config", "/gradio_api/info", "/openapi.json", "/rate/config"):
        assert httpx.get(url + path).status_code in (401, 303), path
    assert httpx.get(url + "/api/health").status_code == 200
    assert httpx.get(url + "/api/jobs", headers={"Authorization": "Bearer fts_not-a-token"}).status_code == 401


def test_login_next_never_leaves_the_site(accounts_studio):
    _settings, url = accounts_studio
    for target in ("//evil.example/", "https://evil.example", "/\\evil.example", "javascript:alert(1)"):
        response = httpx.post(f"{url}/login", data={"username": "tom", "password": PASSWORD, "next": target})
        assert response.headers["location"] == "/", target


def test_failed_logins_are_limited_per_account_and_per_address(tmp_path, processes):
    settings = make_settings(tmp_path / "data", login_failures_per_account=3, login_failures_per_ip=8)
    for name in ("lou", "max"):
        accounts.add_user(_engine(settings), name, "trainer", PASSWORD)
    url = server_starter(processes)(settings)
    statuses = [_login(url, "lou", "wrong password").status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    limited = _login(url, "lou")  # even the right password waits now
    assert limited.status_code == 429 and "Try again in about" in limited.text and "Retry-After" in limited.headers
    # Other accounts from the same address still log in until the address's own limit.
    assert _login(url, "max").status_code == 303
    for i in range(8):
        _login(url, f"nobody{i}", "wrong password")
    assert _login(url, "max").status_code == 429
    print("\nlogin limits: account locked after 3 failures, address after 8")


def test_disabled_users_lose_sessions_and_tokens_at_once(accounts_studio, tmp_path):
    settings, url = accounts_studio
    engine = _engine(settings)
    accounts.add_user(engine, "dee", "trainer", PASSWORD)
    token = accounts.create_token(engine, "dee")
    session = _login(url, "dee").cookies
    assert httpx.get(url + "/api/jobs", cookies=session).status_code == 200
    assert httpx.get(url + "/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    accounts.set_disabled(engine, "dee", True)
    assert httpx.get(url + "/api/jobs", cookies=session).status_code == 401
    assert httpx.get(url + "/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert _login(url, "dee").status_code == 401
    # Tokens are stored only as hashes.
    with engine.connect() as conn:
        from sqlalchemy import text

        stored = [row[0] for row in conn.execute(text("SELECT token_hash FROM api_token"))]
    assert token not in stored and all(len(h) == 64 for h in stored)


def test_admins_manage_users_over_the_api_and_it_is_audited(accounts_studio):
    _settings, url = accounts_studio
    admin = _login(url, "ada").cookies
    origin = {"Origin": url}
    created = httpx.post(url + "/api/users", json={"name": "newbie", "role": "rater", "password": PASSWORD},
                         cookies=admin, headers=origin)
    assert created.status_code == 201, created.text
    duplicate = httpx.post(url + "/api/users", json={"name": "newbie", "role": "rater", "password": PASSWORD},
                           cookies=admin, headers=origin)
    assert duplicate.status_code == 422 and "already exists" in duplicate.json()["detail"]
    weak = httpx.post(url + "/api/users", json={"name": "x2", "role": "rater", "password": "short"}, cookies=admin, headers=origin)
    assert weak.status_code == 422
    token = httpx.post(url + "/api/users/newbie/token", cookies=admin, headers=origin).json()["token"]
    assert httpx.get(url + "/api/me", headers={"Authorization": f"Bearer {token}"}).json()["role"] == "rater"
    trainer = _login(url, "tom").cookies
    assert httpx.post(url + "/api/users", json={"name": "sneaky", "role": "admin", "password": PASSWORD},
                      cookies=trainer, headers=origin).status_code == 403
    assert _login(url, "tom", "not the password").status_code == 401
    run = httpx.post(url + "/api/evals", json={"models": ["demo"], "prompts": ["Say hi."]}, cookies=trainer, headers=origin)
    assert run.status_code == 201, run.text
    assert httpx.post(url + f"/api/evals/{run.json()['id']}/cancel", cookies=trainer, headers=origin).status_code == 200
    log = httpx.get(url + "/api/audit", cookies=admin).json()
    actions = {(e["actor"], e["action"]) for e in log}
    assert ("ada", "add user") in actions and ("ada", "change user") in actions and ("ada", "login", ) in actions
    assert ("tom", "start evaluation") in actions and ("tom", "cancel evaluation") in actions
    assert any(e["action"] == "login" and e["outcome"] == "failed" for e in log)


def _serve(settings, *args: str) -> subprocess.CompletedProcess:
    env = studio_env(settings)
    return subprocess.run([sys.executable, "-m", "studio", "serve", "--port", str(free_port()), *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_network_address_with_no_accounts_refuses_to_start(tmp_path):
    settings = make_settings(tmp_path / "data")
    result = _serve(settings, "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "studio user add NAME --role admin" in result.stderr and "--no-auth" in result.stderr


def test_no_auth_warns_loudly(tmp_path, processes):
    settings = make_settings(tmp_path / "data")
    port = free_port()
    proc = processes.start(["serve", "--host", "0.0.0.0", "--port", str(port), "--no-auth"], studio_env(settings), "noauth")
    from tests.conftest import wait_until

    def up():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    wait_until(up, 90, what="studio serve --no-auth")
    assert "WARNING: --no-auth" in processes.logs()


def test_cli_manages_users(tmp_path):
    settings = make_settings(tmp_path / "data")
    env = studio_env(settings)

    def studio(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "studio", "user", *args], env=env, cwd=ROOT, input=stdin,
                              capture_output=True, text=True, timeout=60)

    assert studio("add", "root-admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    bad_role = studio("add", "x", "--role", "boss", "--password-stdin", stdin=PASSWORD + "\n")
    assert bad_role.returncode == 2 and "choose admin, trainer or rater" in bad_role.stderr
    short = studio("add", "y", "--role", "rater", "--password-stdin", stdin="abc\n")
    assert short.returncode == 2 and "at least 8" in short.stderr
    token = studio("token", "root-admin").stdout.strip()
    assert token.startswith("fts_") and len(token) > 40
    last_admin = studio("disable", "root-admin")
    assert last_admin.returncode == 2 and "last active admin" in last_admin.stderr
    assert studio("add", "bee", "--role", "trainer", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    assert studio("disable", "bee").returncode == 0
    listing = studio("list").stdout
    assert "root-admin" in listing and "admin" in listing and "bee" in listing and "disabled" in listing
    identity = accounts.identity_for_token(_engine(settings), token)
    assert identity is not None and identity.name == "root-admin"


def test_the_first_admin_comes_from_a_secret_file_as_in_docker_compose(tmp_path, processes):
    """What the compose file's studio service does: serve 0.0.0.0 with STUDIO_ADMIN_USER and
    STUDIO_ADMIN_PASSWORD_FILE on an empty DB makes that admin instead of refusing to start."""
    import yaml

    studio_env_in_compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["studio"]["environment"]
    assert studio_env_in_compose["STUDIO_ADMIN_PASSWORD_FILE"].startswith("/run/secrets/")
    secret = tmp_path / "admin_password"
    secret.write_text(PASSWORD + "\n")
    settings = make_settings(tmp_path / "data", admin_user="admin", admin_password_file=secret)
    port = free_port()
    processes.start(["serve", "--host", "0.0.0.0", "--port", str(port)], studio_env(settings), "compose-studio")
    from tests.conftest import wait_until

    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(url + "/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 90, what="studio serve with a bootstrap admin")
    assert httpx.get(url + "/api/jobs").status_code == 401
    assert _login(url, "admin").status_code == 303
    assert [u.name for u in accounts.list_users(_engine(settings))] == ["admin"]
