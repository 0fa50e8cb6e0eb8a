"""A script that must run before Gradio's own modules, put at the top of the UI pages' HTML
as they are served. (Blocks' `head` is added by Gradio's JS, after its modules loaded.)

Gradio's status tracker counts an event's elapsed time on every animation frame, and one
of its loops outlives its component on every page of ours: 60 frames a second on an idle
tab, about half of what a watched job cost Chromium (bench/dashboard.py). Its frames run
once a second instead, like a clock. Its module keeps its own reference to
requestAnimationFrame, taken when it loads, so the wrapper must be in place before that.
"""

from __future__ import annotations

from typing import Callable

from starlette.types import Message, Receive, Scope, Send

SCRIPT = b"""<script>
(() => {
  const frame = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (callback) => {
    if (!(new Error().stack || "").includes("statustracker")) return frame(callback);
    return setTimeout(() => frame(callback), 1000);
  };
})();
</script>"""


class PageScript:
    """ASGI middleware: SCRIPT right after <head> in the HTML answers to GET `paths`."""

    def __init__(self, app: Callable, paths: tuple[str, ...]):
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or (scope["path"].rstrip("/") or "/") not in self.paths:
            await self.app(scope, receive, send)
            return
        held: dict = {}  # an HTML answer's start and body, until its last part (Gradio's pages are small)

        async def rewriting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and dict(message.get("headers", [])).get(
                b"content-type", b""
            ).startswith(b"text/html"):
                held["start"], held["body"] = message, b""
            elif message["type"] == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                if message.get("more_body", False):
                    return
                body = held["body"].replace(b"<head>", b"<head>" + SCRIPT, 1)
                start = held.pop("start")
                headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, rewriting_send)
