"""The permission matrix: every REST route (from the OpenAPI document) and every Gradio
event (from the pages' configs) x {anonymous, rater, trainer, admin}, called on the real
`studio serve` over HTTP, against the rule the code declares. A route or an event without
a rule fails here."""

from __future__ import annotations

import re
from collections import Counter

import httpx
import pytest

from studio.access import Role
from studio.services import accounts
from tests.conftest import make_settings

pytestmark = pytest.mark.db

ROLES = ("anonymous", "rater", "trainer", "admin")
# FastAPI's own pages, not ours; the gate asks for a login for them too.
FASTAPI_DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _rules_in_code(settings):
    """Each APIRoute's declared rule, read from the app the server runs."""
    from fastapi.routing import APIRoute, iter_route_contexts

    from studio.app import create_app

    app = create_app(settings, with_ui=False)
    rules, missing = {}, []
    # route contexts: each route with the dependencies of the routers it was included by
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or route.path in FASTAPI_DOCS:
            continue
        declared = [d.dependency.studio_roles for d in route.dependencies if hasattr(d.dependency, "studio_roles")]
        if len(declared) != 1:
            missing.append(f"{sorted(route.methods)} {route.path}: {len(declared)} rules")
            continue
        for method in route.methods:
            rules[(method, route.path)] = declared[0]
    return rules, missing


def _expected(rule, who: str) -> str:
    if rule is None:
        return "allowed"
    if who == "anonymous":
        return "login"
    return "allowed" if Role(who) in rule else "forbidden"


def _outcome(status: int) -> str:
    return {401: "login", 403: "forbidden"}.get(status, "allowed")


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, module_processes):
    from tests.conftest import server_starter

    settings = make_settings(tmp_path_factory.mktemp("perm") / "data")
    tokens = {}
    for role in ("rater", "trainer", "admin"):
        accounts.add_user(_engine(settings), f"{role}1", role, "correct horse battery")
        tokens[role] = accounts.create_token(_engine(settings), f"{role}1")
    url = server_starter(module_processes)(settings)
    return settings, url, tokens


def _engine(settings):
    from studio.db import engine_for

    return engine_for(settings.db_url)


def _client(url: str, tokens: dict[str, str], who: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {tokens[who]}"} if who != "anonymous" else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30, follow_redirects=False)


def test_every_rest_route_has_a_rule_and_the_server_enforces_it(studio):
    settings, url, tokens = studio
    rules, missing = _rules_in_code(settings)
    assert not missing, "routes without exactly one rule (add dependencies=[Depends(require(...))]):\n" + "\n".join(missing)
    with _client(url, tokens, "admin") as admin:
        document = admin.get("/openapi.json").json()
    served = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    # the login pages are left out of the schema; everything the schema lists has a rule
    assert served <= set(rules), f"routes the OpenAPI document lists without a rule: {served - set(rules)}"

    wrong, counts, five_hundreds = [], Counter(), []
    for who in ROLES:
        with _client(url, tokens, who) as client:
            for (method, path), rule in sorted(rules.items()):
                if path in ("/logout", "/login") and method == "POST":
                    continue  # public; a wrong password is a 401 by design (tests/security/test_web.py)
                if path.startswith("/api/users") and method == "POST" and who == "admin":
                    continue  # changing users mid-matrix would change later rows
                response = client.request(method, _fill(path), json={} if method in ("POST", "PATCH", "PUT") else None)
                if response.status_code >= 500:
                    five_hundreds.append(f"{who} {method} {path}: {response.status_code}")
                got, want = _outcome(response.status_code), _expected(rule, who)
                if path == "/login" and method == "GET" and who != "anonymous":
                    got = "allowed"  # a logged-in user is sent on (303)
                counts[(who, got)] += 1
                if got != want:
                    wrong.append(f"{who} {method} {path}: expected {want}, got {response.status_code}")
    print(f"\nREST matrix: {len(rules)} routes x {len(ROLES)} callers; outcomes {dict(counts)}")
    assert not five_hundreds, five_hundreds
    assert not wrong, "\n".join(wrong)


def test_the_uis_dashboard_routes_admit_trainers_only(studio):
    """GET /api/jobs/N/dashboard and /api/ui/jobs-table belong to the UI (left out of the
    OpenAPI document, and of the app without the UI that the matrix reads), so they get
    their own rows."""
    from studio.ui.dashboard_api import router

    (rule,) = [d.dependency.studio_roles for d in router.dependencies]
    assert rule == {Role.trainer, Role.admin}
    assert sorted(r.path for r in router.routes) == ["/api/jobs/{job_id}/dashboard", "/api/ui/jobs-table"]
    settings, url, tokens = studio
    for who in ROLES:
        with _client(url, tokens, who) as client:
            answer = client.get("/api/jobs/999/dashboard")
            table = client.get("/api/ui/jobs-table", params={"have": "<script>"})
            bad = client.get("/api/jobs/1/dashboard", params={"status": "f" * 10_000, "logs": "../../etc"})
        assert _outcome(answer.status_code) == _expected(rule, who), (who, answer.status_code, answer.text[:200])
        assert _outcome(table.status_code) == _expected(rule, who), (who, table.status_code)
        if _expected(rule, who) == "allowed":
            assert answer.status_code == 404 and "999" in answer.text  # no such job, said plainly
            assert table.status_code == 422 and "have" in table.text  # a key is 16 hex digits at most
            assert bad.status_code == 422 and "status" in bad.text and "logs" in bad.text


def test_every_gradio_event_has_a_rule_and_the_gate_enforces_it(studio):
    settings, url, tokens = studio
    from studio.services.context import StudioContext
    from studio.ui.app import build_rater_rules, build_ui
    from studio.ui.rater_app import build_rater_ui

    ctx = StudioContext.from_settings(settings)
    page, main_rules = build_ui(ctx)
    rater_page = build_rater_ui(ctx)
    rater_rules = build_rater_rules(rater_page)
    assert set(page.fns) == set(main_rules.roles), "events of the main page without a role rule"
    assert set(rater_page.fns) == set(rater_rules.roles), "events of the rater page without a role rule"

    wrong, calls = [], 0
    for prefix, rules in (("", main_rules), ("/rate", rater_rules)):
        with _client(url, tokens, "admin") as admin:
            config = admin.get(f"{prefix}/config").json()
        served = {dep["id"] for dep in config["dependencies"]}
        assert served == set(rules.roles), f"{prefix or '/'}: the served page's events differ from the rules"
        for who in ROLES:
            with _client(url, tokens, who) as client:
                for fn_id, rule in sorted(rules.roles.items()):
                    body = {"fn_index": fn_id, "data": [], "session_hash": f"matrix{who}", "event_data": None, "trigger_id": None}
                    response = client.post(f"{prefix}/gradio_api/queue/join", json=body)
                    calls += 1
                    got, want = _outcome(response.status_code), _expected(rule, who)
                    if response.status_code >= 500 and response.status_code != 503:
                        wrong.append(f"{who} {prefix} event {fn_id}: {response.status_code}")
                    elif got != want:
                        wrong.append(f"{who} {prefix} event {fn_id} ({page.fns.get(fn_id).name if prefix == '' else ''}): "
                                     f"expected {want}, got {response.status_code}")
        # Named API calls go through the same rules.
        with _client(url, tokens, "rater") as rater:
            for api_name, fn_id in rules.api_names.items():
                response = rater.post(f"{prefix}/gradio_api/call/{api_name}", json={"data": []})
                calls += 1
                if _outcome(response.status_code) != _expected(rules.roles[fn_id], "rater"):
                    wrong.append(f"rater {prefix} /call/{api_name}: got {response.status_code}")
    print(f"\nGradio matrix: {len(main_rules.roles)} + {len(rater_rules.roles)} events, {calls} calls")
    assert not wrong, "\n".join(wrong)


def test_a_rater_never_loads_the_trainers_page(studio):
    _settings, url, tokens = studio
    with _client(url, tokens, "rater") as rater:
        assert rater.get("/").headers["location"] == "/rate/"
        for path in ("/config", "/gradio_api/info", "/api/jobs", "/api/datasets"):
            assert rater.get(path).status_code == 403, path
        assert rater.post("/gradio_api/upload", files={"files": ("a.jsonl", b"{}")}).status_code == 403
        assert rater.get("/rate/config").status_code == 200
