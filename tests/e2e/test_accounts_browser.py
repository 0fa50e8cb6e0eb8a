"""Two people share one studio, in a real headless Chromium on the real `studio serve`:
an admin adds a trainer and a rater in the Admin tab, each logs in and sees only what
their role allows, and a page on another site cannot act through the user's browser."""

from __future__ import annotations

import http.server
import threading

import httpx
import pytest

from studio.services import accounts
from tests.conftest import free_port
from tests.e2e.conftest import SHOTS

pytestmark = [pytest.mark.e2e, pytest.mark.db]
PASSWORD = "correct horse battery"


def _engine(settings):
    from studio.db import engine_for

    return engine_for(settings.db_url)


def log_in(page, url: str, name: str, password: str = PASSWORD) -> None:
    page.goto(url + "/")
    page.wait_for_url("**/login**")
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("#login-button")


def visible_tabs(page) -> list[str]:
    return [t.strip() for t in page.get_by_role("tab").all_inner_texts()]


def test_admin_adds_a_trainer_and_a_rater_who_see_only_their_part(settings, start_server, page):
    accounts.add_user(_engine(settings), "ada", "admin", PASSWORD)
    url = start_server(settings)

    # A wrong password gets a plain message where the eye is.
    log_in(page, url, "ada", "not it")
    assert page.locator("#login-error").inner_text() == "Wrong user name or password."
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.locator("#user-bar-form").wait_for()
    assert "Signed in as ada" in page.locator("#user-bar-form").inner_text()
    page.locator("#tab-admin-button").click()
    for name, role in (("tess", "trainer"), ("rhea", "rater")):
        page.locator("#admin-name input, #admin-name textarea").first.fill(name)
        page.locator("#admin-role input").click()
        page.get_by_role("option", name=role, exact=True).click()
        page.locator("#admin-password input").fill(PASSWORD)
        page.locator("#admin-add").click()
        page.locator("#admin-add-message").get_by_text(f"Added {name} as {role}").wait_for()
    page.locator("#admin-users").get_by_text("rhea").first.wait_for(state="attached")
    page.screenshot(path=str(SHOTS / "accounts-admin.png"), full_page=True)
    assert {u.name: u.role for u in accounts.list_users(_engine(settings))} == {"ada": "admin", "tess": "trainer", "rhea": "rater"}
    page.locator("#logout").click()
    page.wait_for_url("**/login**")

    # The trainer works with datasets, training and jobs; no Admin tab.
    log_in(page, url, "tess")
    page.locator("#user-bar-form").wait_for()
    page.get_by_role("tab", name="Jobs").wait_for()
    assert "Admin" not in visible_tabs(page) and {"Datasets", "Train", "Jobs"} <= set(visible_tabs(page))
    page.locator("#logout").click()
    page.wait_for_url("**/login**")

    # The rater gets only the Evaluation page, even when typing the trainers' address.
    log_in(page, url, "rhea")
    page.wait_for_url("**/rate/**")
    page.locator("#rater-queue").wait_for()
    assert visible_tabs(page) == ["Evaluation"]
    page.goto(url + "/?tab=jobs")
    page.wait_for_url("**/rate/**")
    page.screenshot(path=str(SHOTS / "accounts-rater.png"))
    # The rater's browser, with its session cookie, is refused the trainers' events and data.
    status = page.evaluate("""async () => (await fetch('/api/jobs')).status""")
    assert status == 403
    audit = accounts.audit_log(_engine(settings))
    assert {("ada", "add user"), ("tess", "login"), ("rhea", "login")} <= {(e.actor, e.action) for e in audit}


class _EvilPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):  # noqa: N802
        body = f"""<!doctype html><html><body><p id="done">working</p><script>
        (async () => {{
          const data = new FormData();
          data.append('file', new Blob(['{{"instruction": "pwned", "output": "x"}}\\n']), 'evil.jsonl');
          const results = [];
          for (const path of ['/api/datasets', '/gradio_api/upload']) {{
            try {{ const r = await fetch('{self.target}' + path, {{method: 'POST', body: data, credentials: 'include', mode: 'no-cors'}});
                   results.push(r.type); }} catch (e) {{ results.push('error'); }}
          }}
          document.getElementById('done').textContent = 'done ' + results.join(',');
        }})();
        </script></body></html>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


def test_an_attackers_page_cannot_act_through_the_users_browser(settings, start_server, page):
    url = start_server(settings)  # single-user mode: the easiest target, no login at all
    before = httpx.get(url + "/api/datasets").json()
    port = free_port()
    _EvilPage.target = url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _EvilPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page.goto(url + "/")  # the user has the studio open
        page.goto(f"http://localhost:{port}/")  # and visits another site
        page.get_by_text("done").wait_for()
    finally:
        server.shutdown()
    assert httpx.get(url + "/api/datasets").json() == before
    uploads = list((settings.data_dir / "gradio").rglob("evil.jsonl")) if (settings.data_dir / "gradio").exists() else []
    assert uploads == []
