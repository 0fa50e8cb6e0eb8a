"""Upload size limit enforced while the body streams in.

Starlette spools a multipart body to disk before a handler sees it, so a limit checked in
the handler comes after a 1 GB body is already written. This pure-ASGI middleware counts
the body bytes of requests to the upload routes and answers 413 as soon as the count
passes the limit; a declared Content-Length over the limit is refused before the app
reads anything (the message then gives the real size; for a body of unknown length it
says "more than").
"""

from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPLOAD_PATHS = ("/api/datasets", "/api/datasets/inspect", "/gradio_api/upload")
_FILENAME = re.compile(rb'filename="([^"\r\n]{0,255})"')
HEAD_BYTES = 4096  # enough of the body to find the first part's file name


class _TooLarge(Exception):
    pass


def describe_size(size: float) -> str:
    """1.2 GB, 340 MB, 12 kB: decimal units, like the limit setting (STUDIO_MAX_UPLOAD_MB)."""
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    if size >= 1e6:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e3:.0f} kB"


class UploadLimit:
    """ASGI middleware: 413 for an upload body over max_bytes, decided while it streams."""

    def __init__(self, app: Callable, max_bytes: int, paths: tuple[str, ...] = UPLOAD_PATHS):
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path", "").rstrip("/") not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            first = await receive()
            await self._refuse(send, receive, first.get("body", b""), declared, first.get("more_body", False), exact=True)
            return
        state = {"count": 0, "head": b"", "over": False, "started": False}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                state["count"] += len(body)
                if len(state["head"]) < HEAD_BYTES:
                    state["head"] += body[:HEAD_BYTES]
                if state["count"] > self.max_bytes:
                    state["over"] = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # whatever the app answers to the cut body, the answer is 413
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            pass
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await self._refuse(send, receive, state["head"], state["count"], False, exact=False)

    async def _refuse(self, send: Send, receive: Receive, head: bytes, size: int, more: bool, exact: bool) -> None:
        # Read on only as far as the first part's file name; the rest is never read (the
        # client still gets the answer: HTTP clients read a response that comes early).
        while more and len(head) < HEAD_BYTES and not _FILENAME.search(head):
            message = await receive()
            if message["type"] != "http.request":
                break
            head += message.get("body", b"")
            more = message.get("more_body", False)
        match = _FILENAME.search(head)
        name = match.group(1).decode("utf-8", "replace") if match else "the upload"
        size_text = describe_size(size) if exact else f"more than {describe_size(size)}"
        detail = f"{name} is {size_text}; the limit is {self.max_bytes / 1e6:g} MB (STUDIO_MAX_UPLOAD_MB)"
        body = json.dumps({"detail": detail, "errors": [detail]}).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
