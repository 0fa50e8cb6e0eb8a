"""The model host's HTTP face: the web app (never a browser) posts generation requests
and reads back newline-delimited JSON events as tokens come.

    POST /generate   GenerateRequest -> start, delta..., end..., done   (or a JSON error)
    GET  /stats      models in memory, memory budget, cache hits, batch counts
    GET  /health
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from worker.infer.engine import Engine, GenerateRequest

log = logging.getLogger("studio.infer")


def _error(status: int, message: str, kind: str = "invalid_request_error", code: Optional[str] = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def create_host(engine: Engine, token: Optional[str] = None) -> FastAPI:
    """The host app around a started engine; with `token`, callers must send it as Bearer."""
    app = FastAPI(title="studio model host")

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if token and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "the model host needs its token (STUDIO_INFER_TOKEN)", "authentication_error")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid")))

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    def stats() -> dict:
        return engine.stats()

    @app.post("/generate")
    async def generate(body: GenerateRequest):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        pending = engine.submit(body, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        first = await events.get()
        if first["type"] == "error":
            return _error(first["status"], first["message"], first["kind"], first["code"])

        async def lines():
            event = first
            try:
                while True:
                    yield json.dumps(event) + "\n"
                    if event["type"] in ("done", "error"):
                        return
                    event = await events.get()
            finally:
                pending.cancelled.set()  # the caller went away: stop its rows at the next token

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app
