"""The OpenAI-compatible API under /v1 (models, chat completions, completions; streamed as
server-sent events in OpenAI's chunk format), and the studio's own chat routes under
/api/chat. Errors under /v1 come in OpenAI's shape:
{"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Iterator, Literal, Optional

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from studio.access import Role, identity_of, require
from studio.models import SafetyRulePublic
from studio.services import chat
from studio.services.chat import ChatError, ChatStream, Sampling
from studio.services.context import StudioContext

router = APIRouter(prefix="/v1", dependencies=[Depends(require(Role.trainer))])
studio_router = APIRouter(prefix="/api/chat", dependencies=[Depends(require(Role.trainer))])
admin_router = APIRouter(prefix="/api/chat", dependencies=[Depends(require(Role.admin))])

MAX_BODY = 4 * 1024 * 1024  # a chat request's JSON


def _ctx(request: Request) -> StudioContext:
    return request.app.state.ctx


def _user(request: Request) -> str:
    identity = identity_of(request)
    return identity.name if identity else ""


def openai_error(status: int, message: str, kind: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


# --- request bodies ------------------------------------------------------------------


class _V1Body(BaseModel):
    # OpenAI clients send fields this server does not use (user, presence_penalty...): ignored.
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)  # OpenAI's default
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: Optional[int] = Field(default=None, ge=1, le=4096)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1, le=4096)
    stop: Optional[str | list[str]] = None
    seed: Optional[int] = Field(default=None, ge=0, le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=8)
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed, n=self.n,
                        max_tokens=self.max_completion_tokens or self.max_tokens or 256, stop=self.stop)


class ChatCompletionBody(_V1Body):
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=200)


class CompletionBody(_V1Body):
    prompt: str = Field(max_length=200_000)


async def _parse(request: Request, schema: type[_V1Body]) -> _V1Body:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ChatError(413, f"the request body is over {MAX_BODY // 1024 // 1024} MB")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ChatError(400, "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise ChatError(400, "the request body must be a JSON object")
    try:
        parsed = schema.model_validate(data)
        parsed.sampling()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ChatError(400, f"{where}: {first['msg']}", param=where.split(".")[0] or None) from None
    return parsed


# --- /v1 -----------------------------------------------------------------------------


def _model_object(entry: chat.ModelEntry) -> dict[str, Any]:
    return {"id": entry.id, "object": "model", "created": entry.created, "owned_by": "studio",
            "base": entry.base, "job_id": entry.job_id, "step": entry.step, "eval_loss": entry.eval_loss,
            "final": entry.final}


@router.get("/models")
def list_models(request: Request) -> dict:
    """The bases in use and every job's result and checkpoints."""
    return {"object": "list", "data": [_model_object(e) for e in chat.list_models(_ctx(request))]}


def _find_model(request: Request, model_id: str) -> dict:
    for entry in chat.list_models(_ctx(request)):
        if entry.id == model_id:
            return _model_object(entry)
    raise ChatError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")


@router.get("/models/{model_id}")
def get_model(request: Request, model_id: Annotated[str, PathParam(max_length=200)]) -> dict:
    return _find_model(request, model_id)


@router.get("/models/{job}/{checkpoint}")
def get_checkpoint_model(request: Request, job: Annotated[str, PathParam(max_length=40)],
                         checkpoint: Annotated[str, PathParam(max_length=40)]) -> dict:
    """A checkpoint's id has a slash: job-N/checkpoint-S."""
    return _find_model(request, f"{job}/{checkpoint}")


@router.post("/chat/completions")
async def chat_completions(request: Request):
    body = await _parse(request, ChatCompletionBody)
    stream = await run_in_threadpool(chat.open_stream, _ctx(request), body.model, body.sampling(),
                                     messages=body.messages, endpoint="chat", user=_user(request))
    return await _answer(stream, body, "chat.completion")


@router.post("/completions")
async def completions(request: Request):
    body = await _parse(request, CompletionBody)
    stream = await run_in_threadpool(chat.open_stream, _ctx(request), body.model, body.sampling(),
                                     prompt=body.prompt, endpoint="completions", user=_user(request))
    return await _answer(stream, body, "text_completion")


def _reason(reason: Optional[str]) -> str:
    return {"cancelled": "stop", None: "length"}.get(reason, reason)  # type: ignore[arg-type]


async def _answer(stream: ChatStream, body: _V1Body, kind: str):
    ident = ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(_events(stream, ident, created, kind, usage), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
    await run_in_threadpool(_drain, stream)
    if kind == "chat.completion":
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                    "finish_reason": _reason(c.finish_reason)} for i, c in enumerate(stream.choices)]
    else:
        choices = [{"index": i, "text": c.text, "logprobs": None, "finish_reason": _reason(c.finish_reason)}
                   for i, c in enumerate(stream.choices)]
    return {"id": ident, "object": kind, "created": created, "model": stream.model, "choices": choices,
            "usage": stream.usage, "system_fingerprint": None}


def _drain(stream: ChatStream) -> None:
    for _ in stream:
        pass


def _events(stream: ChatStream, ident: str, created: int, kind: str, include_usage: bool) -> Iterator[str]:
    chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"

    def chunk(choices: list[dict], **extra: Any) -> str:
        payload = {"id": ident, "object": chunk_kind, "created": created, "model": stream.model,
                   "choices": choices, "system_fingerprint": None, **extra}
        return f"data: {json.dumps(payload)}\n\n"

    def choice(index: int, text: Optional[str], reason: Optional[str], first: bool = False) -> dict:
        if kind == "chat.completion":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}

    if kind == "chat.completion":
        yield chunk([choice(i, "", None, first=True) for i in range(stream.n)])
    try:
        for event in stream:
            if event["type"] == "delta":
                yield chunk([choice(event["index"], event["text"], None)])
            else:
                yield chunk([choice(event["index"], None, _reason(event["finish_reason"]))])
    except ChatError as exc:
        error = {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}
        yield f"data: {json.dumps({'error': error})}\n\n"
    else:
        if include_usage:
            yield chunk([], usage=stream.usage)
    yield "data: [DONE]\n\n"


# --- /api/chat -----------------------------------------------------------------------


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=chat.MAX_COLUMNS)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=200)
    sampling: Sampling = Field(default_factory=Sampling)


@studio_router.post("")
def chat_many(request: Request, body: ChatBody) -> dict:
    """One reply per model to the same conversation, with the same sampling."""
    replies = chat.chat_many(_ctx(request), body.models, body.messages, body.sampling, _user(request))
    return {"replies": replies}


@studio_router.get("/models")
def chat_models(request: Request) -> list[dict]:
    """The models to pick from, with labels (step, eval loss)."""
    return [{**_model_object(e), "label": e.label} for e in chat.list_models(_ctx(request))]


@studio_router.get("/stats")
def chat_stats(request: Request, model: Optional[str] = None) -> dict:
    """p50/p95 latency and time to first token, tokens/s, cache hits (request log)."""
    return chat.stats(_ctx(request), model=model)


class RuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["word", "regex"]
    pattern: str = Field(min_length=1, max_length=500)


@admin_router.get("/blocklist")
def list_rules(request: Request) -> list[SafetyRulePublic]:
    """The safety blocklist (admins)."""
    return chat.list_rules(_ctx(request))


@admin_router.post("/blocklist", status_code=201)
def add_rule(request: Request, body: RuleBody) -> SafetyRulePublic:
    """Block a word or a regular expression in requests and replies (admins)."""
    return chat.add_rule(_ctx(request), body.kind, body.pattern, _user(request))


@admin_router.delete("/blocklist/{rule_id}", status_code=204)
def delete_rule(request: Request, rule_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)]) -> None:
    chat.delete_rule(_ctx(request), rule_id)


# --- wiring --------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The routes, and errors in OpenAI's shape under /v1 (the role rule's 401/403 too)."""
    app.include_router(router)
    app.include_router(studio_router)
    app.include_router(admin_router)

    @app.exception_handler(ChatError)
    async def _chat_error(request: Request, exc: ChatError):
        if request.url.path.startswith("/v1"):
            return openai_error(exc.status, exc.message, exc.kind, exc.param, exc.code)
        return JSONResponse({"detail": exc.message, "errors": [exc.message]}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        if request.url.path.startswith("/v1"):
            kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}.get(
                exc.status_code, "invalid_request_error")
            return openai_error(exc.status_code, str(exc.detail), kind)
        return await http_exception_handler(request, exc)
