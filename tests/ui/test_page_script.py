"""The script that tames Gradio's frame loop goes first into the UI pages' <head>, and
nowhere else (studio/ui/page_script.py); the browser side is in tests/e2e/test_idle_page.py."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from studio.ui.page_script import SCRIPT, PageScript

PAGE = "<!doctype html><html><head><title>studio</title></head><body>é</body></html>"


def _client() -> TestClient:
    async def page(request):
        return HTMLResponse(PAGE)

    async def streamed(request):
        async def parts():
            yield b"<html><head>"
            yield b"</head><body>x</body></html>"

        return StreamingResponse(parts(), media_type="text/html")

    async def data(request):
        return JSONResponse({"html": "<head>"})

    app = Starlette(routes=[
        Route("/", page, methods=["GET", "POST"]), Route("/rate", streamed), Route("/api/x", data),
        Route("/other", page),
    ])
    return TestClient(PageScript(app, paths=("/", "/rate")))


def test_the_script_comes_first_in_the_pages_head():
    client = _client()
    for path in ("/", "/?tab=jobs", "/rate/"):
        answer = client.get(path)
        assert answer.status_code == 200
        assert answer.content.startswith(b"<!doctype html><html><head><script>") or answer.content.startswith(
            b"<html><head><script>"
        ), path
        assert answer.content.count(SCRIPT) == 1
        assert int(answer.headers["content-length"]) == len(answer.content)
    assert client.get("/").text.endswith("<body>é</body></html>")


def test_other_answers_pass_untouched():
    client = _client()
    assert client.get("/api/x").json() == {"html": "<head>"}
    assert SCRIPT not in client.get("/other").content
    assert SCRIPT not in client.post("/").content
