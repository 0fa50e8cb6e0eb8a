"""Chat and the OpenAI-compatible API, on the web-app side: which models there are, what
a model id means (its base, adapter folder and frozen template), the safety filter, the
request log, and the HTTP conversation with the model host (`studio infer`), which does
the generating. No torch here: the web app only talks HTTP."""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterator, Mapping, Optional, Sequence

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import select

from studio.core.config import JobConfig
from studio.core.model_ids import ModelId, format_model_id, parse_model_id
from studio.core.paths import JobPaths
from studio.core.safety import REFUSAL, Blocklist, check_rule, load_classifier
from studio.db import session_scope
from studio.models import ChatRequest, Checkpoint, Job, JobStatus, SafetyRule, SafetyRulePublic
from studio.core.basemodels import DEMO
from studio.services.context import NotFound, StudioContext

log = logging.getLogger(__name__)

MAX_COLUMNS = 5  # the base and up to four checkpoints side by side
COMPLETE_MARKER = "studio_complete.json"  # worker.checkpoints: a checkpoint written whole


class ChatError(Exception):
    """A chat request that cannot be served: HTTP status, message, and OpenAI's error
    type, param and code."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code


class Sampling(BaseModel):
    """The sampling settings every column of a chat shares (and /v1's fields)."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0: greedy (the most likely token).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Sample from the smallest set of tokens "
                         "holding this much probability.")
    max_tokens: int = Field(default=128, ge=1, le=4096, description="Most new tokens per reply.")
    seed: Optional[int] = Field(default=None, ge=0, le=2**63 - 1, description="Same seed, same reply.")
    n: int = Field(default=1, ge=1, le=8, description="Replies per request.")
    stop: list[str] = Field(default_factory=list, max_length=4, description="Texts that end a reply.")

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else ([] if value is None else value)


# --- models --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """A model id with what the Chat tab shows about it."""

    id: str
    base: str
    job_id: Optional[int] = None
    step: Optional[int] = None
    eval_loss: Optional[float] = None
    final: bool = False
    created: int = 0

    @property
    def label(self) -> str:
        if self.job_id is None:
            return f"{self.id} (base)"
        what = "final result" if self.final else "checkpoint"
        loss = f", eval loss {self.eval_loss:.3f}" if self.eval_loss is not None else ""
        return f"{self.id} ({what}, step {self.step}{loss})"


def _stamp(when) -> int:
    return int(when.timestamp()) if when else 0


def list_models(ctx: StudioContext) -> list[ModelEntry]:
    """The bases in use (the demo always), then every job's result and checkpoints whose
    folders are there, newest job first."""
    root = ctx.settings.artifacts_root
    with session_scope(ctx.engine) as session:
        jobs = session.exec(select(Job).order_by(Job.id.desc())).all()
        saved = session.exec(select(Checkpoint).order_by(Checkpoint.job_id.desc(), Checkpoint.step.desc())).all()
        jobs = [(j.id, j.base_model, _stamp(j.created_at)) for j in jobs]
        saved = [(c.job_id, c.step, c.eval_loss, c.final, _stamp(c.created_at)) for c in saved]
    bases = list(dict.fromkeys([DEMO] + [base for _, base, _ in jobs]))
    entries = [ModelEntry(id=b, base=b) for b in bases]
    base_of = {job_id: base for job_id, base, _ in jobs}
    by_job: dict[int, list[ModelEntry]] = {}
    for job_id, step, loss, final, created in saved:
        model = ModelId(job_id=job_id, step=None if final else step)
        folder = model.folder(root)
        if not folder.is_dir() or (not final and not (folder / COMPLETE_MARKER).is_file()):
            continue  # pruned, or never written whole
        entry = ModelEntry(str(model), base_of.get(job_id, ""), job_id, step, loss, final, created)
        by_job.setdefault(job_id, []).append(entry)
    for job_id, _, _ in jobs:
        rows = by_job.get(job_id, [])
        entries += [e for e in rows if e.final] + [e for e in rows if not e.final]
    return entries


def job_model_ids(ctx: StudioContext, job_id: int) -> list[str]:
    """What opening Chat from a job preselects: its base, and its result (else its newest
    checkpoint)."""
    entries = [e for e in list_models(ctx) if e.job_id == job_id]
    with session_scope(ctx.engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        base = job.base_model
    return [base] + ([entries[0].id] if entries else [])


@dataclass(frozen=True)
class Resolved:
    entry_id: str
    spec: dict[str, Any]  # worker.infer.engine.ModelSpec as JSON
    template_name: str


def resolve(ctx: StudioContext, model: str, base_template: Optional[dict] = None) -> Resolved:
    """What the model host needs for a model id. A base is prompted with `base_template`
    (the template of the job it is compared with) or the default (Alpaca)."""
    try:
        parsed = parse_model_id(model)
    except ValueError as exc:
        raise ChatError(404, str(exc), param="model", code="model_not_found") from None
    if parsed.is_base:
        if parsed.base not in {e.base for e in list_models(ctx) if e.job_id is None}:
            raise ChatError(404, f"The model '{model[:200]}' does not exist: GET /v1/models lists them",
                            param="model", code="model_not_found")
        template = dict(base_template or {})
        spec = {"id": parsed.base, "base": parsed.base, "template": template}
        return Resolved(parsed.base, spec, template.get("name", "alpaca"))
    with session_scope(ctx.engine) as session:
        job = session.get(Job, parsed.job_id)
        if job is None:
            raise ChatError(404, f"The model '{model}' does not exist: there is no job {parsed.job_id}",
                            param="model", code="model_not_found")
        config = JobConfig.model_validate_json(job.config_json)
        status = job.status
    folder = parsed.folder(ctx.settings.artifacts_root)
    if not folder.is_dir() or (parsed.step is not None and not (folder / COMPLETE_MARKER).is_file()):
        why = (f"job {parsed.job_id} has no final result yet ({status.value}); use one of its checkpoints"
               if parsed.step is None and status != JobStatus.succeeded else "it was pruned or never written whole")
        raise ChatError(404, f"The model '{model}' does not exist: {why}", param="model", code="model_not_found")
    relative = JobPaths(ctx.settings.artifacts_root, parsed.job_id).relative(folder)
    spec = {
        "id": str(parsed), "base": config.model.base_model, "trust_remote_code": config.model.trust_remote_code,
        "template": config.template.model_dump(mode="json"),
        ("full" if config.adapter.method == "full" else "adapter"): relative,
    }
    return Resolved(str(parsed), spec, config.template.name)


# --- the safety blocklist ------------------------------------------------------------


def list_rules(ctx: StudioContext) -> list[SafetyRulePublic]:
    with session_scope(ctx.engine) as session:
        rows = session.exec(select(SafetyRule).order_by(SafetyRule.id)).all()
        return [SafetyRulePublic.model_validate(r, from_attributes=True) for r in rows]


def add_rule(ctx: StudioContext, kind: str, pattern: str, by: str) -> SafetyRulePublic:
    problem = check_rule(kind, pattern)
    if problem:
        raise ChatError(400, problem, param=problem.split(":")[0])
    with session_scope(ctx.engine) as session:
        rule = SafetyRule(kind=kind, pattern=pattern.strip() if kind == "word" else pattern, created_by=by)
        session.add(rule)
        session.flush()
        return SafetyRulePublic.model_validate(rule, from_attributes=True)


def delete_rule(ctx: StudioContext, rule_id: int) -> None:
    with session_scope(ctx.engine) as session:
        rule = session.get(SafetyRule, rule_id)
        if rule is None:
            raise NotFound(f"safety rule {rule_id} does not exist")
        session.delete(rule)


def blocklist(ctx: StudioContext) -> Blocklist:
    """The current rules (read per request: an admin's edit counts at once)."""
    with session_scope(ctx.engine) as session:
        rules = [(r.kind, r.pattern) for r in session.exec(select(SafetyRule)).all()]
    return Blocklist.compile(rules, load_classifier(ctx.settings.safety_classifier))


# --- the request log -----------------------------------------------------------------


def record(ctx: StudioContext, **values: Any) -> None:
    try:
        with session_scope(ctx.engine) as session:
            session.add(ChatRequest(**values))
    except Exception:  # the answer went out; a log row lost is not worth an error
        log.exception("chat request log failed")


def _percentile(values: Sequence[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def stats(ctx: StudioContext, last: int = 500, model: Optional[str] = None) -> dict[str, Any]:
    """p50/p95 latency and time to first token, median output tokens/s, cache hits and
    filtered requests over the last `last` requests."""
    with session_scope(ctx.engine) as session:
        query = select(ChatRequest).where(ChatRequest.status == "ok")
        if model:
            query = query.where(ChatRequest.model == model)
        rows = session.exec(query.order_by(ChatRequest.id.desc()).limit(last)).all()
        rows = [(r.latency_ms, r.ttft_ms, r.tokens_out, r.cache_hit, r.filtered) for r in rows]
    latency = [r[0] for r in rows]
    ttft = [r[1] for r in rows if r[1] is not None]
    speed = [r[2] / (r[0] / 1000) for r in rows if r[0] > 0 and r[2] > 0]
    return {
        "requests": len(rows),
        "latency_ms_p50": _percentile(latency, 0.5), "latency_ms_p95": _percentile(latency, 0.95),
        "ttft_ms_p50": _percentile(ttft, 0.5), "ttft_ms_p95": _percentile(ttft, 0.95),
        "tokens_per_second_p50": statistics.median(speed) if speed else None,
        "cache_hits": sum(1 for r in rows if r[3]), "filtered": sum(1 for r in rows if r[4]),
    }


# --- talking to the model host -------------------------------------------------------


@dataclass
class Choice:
    text: str = ""
    finish_reason: Optional[str] = None
    filtered: bool = False


@dataclass
class ChatStream:
    """One request's answer as it comes: iterate for events {"type": "delta", "index",
    "text"} and {"type": "end", "index", "finish_reason"}; afterwards `choices`, `usage`,
    `cached`, `ttft_ms` and `latency_ms` hold the whole answer. The request is logged
    when the iteration ends."""

    ctx: StudioContext
    model: str
    endpoint: str
    user: str
    n: int
    started: float
    blocklist: Blocklist
    lines: Optional[Iterator[str]] = None
    close: Any = None
    refusal: bool = False
    prompt_tokens: int = 0
    cached: bool = False
    choices: list[Choice] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    ttft_ms: Optional[float] = None
    latency_ms: float = 0.0
    error: Optional[str] = None

    def __post_init__(self):
        self.choices = [Choice() for _ in range(self.n)]

    @property
    def filtered(self) -> bool:
        return self.refusal or any(c.filtered for c in self.choices)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from (self._refuse() if self.refusal else self._relay())
        finally:
            if self.close is not None:
                self.close()
            self.latency_ms = (time.monotonic() - self.started) * 1000
            out = self.usage.get("completion_tokens", 0)
            record(self.ctx, user_name=self.user[:64], endpoint=self.endpoint, model=self.model[:200],
                   status="error" if self.error else "ok", latency_ms=self.latency_ms, ttft_ms=self.ttft_ms,
                   tokens_in=self.prompt_tokens, tokens_out=out, cache_hit=self.cached, filtered=self.filtered)

    def _refuse(self) -> Iterator[dict[str, Any]]:
        self.ttft_ms = (time.monotonic() - self.started) * 1000
        for index, choice in enumerate(self.choices):
            choice.text, choice.finish_reason = REFUSAL, "content_filter"
            yield {"type": "delta", "index": index, "text": REFUSAL}
            yield {"type": "end", "index": index, "finish_reason": "content_filter"}
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    def _relay(self) -> Iterator[dict[str, Any]]:
        try:
            for line in self.lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event["type"]
                if kind == "delta":
                    choice = self.choices[event["index"]]
                    if choice.filtered:
                        continue
                    if self.ttft_ms is None:
                        self.ttft_ms = (time.monotonic() - self.started) * 1000
                    choice.text += event["text"]
                    reason = self.blocklist.blocks(choice.text)
                    if reason:
                        log.warning("reply of %s blocked by the safety filter (%s)", self.model, reason)
                        choice.filtered, choice.finish_reason = True, "content_filter"
                        choice.text = REFUSAL
                        yield {"type": "end", "index": event["index"], "finish_reason": "content_filter"}
                        continue
                    yield event
                elif kind == "end":
                    choice = self.choices[event["index"]]
                    if not choice.filtered:
                        choice.finish_reason = event["finish_reason"]
                        yield event
                elif kind == "done":
                    self.usage, self.cached = event["usage"], event["cached"]
                    return
                elif kind == "error":
                    raise ChatError(event["status"], event["message"], event["kind"], code=event.get("code"))
            raise ChatError(503, "the model host stopped answering mid-reply", "server_error")
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise ChatError(503, f"the model host stopped answering mid-reply ({type(exc).__name__})",
                            "server_error") from None
        except ChatError as exc:
            self.error = exc.message
            raise


def _texts(messages: Optional[Sequence[Mapping[str, Any]]], prompt: Optional[str]) -> list[str]:
    if prompt is not None:
        return [prompt]
    texts = []
    for message in messages or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
    return texts


@lru_cache(maxsize=8)
def host_client(url: str, timeout: float) -> httpx.Client:
    """One connection pool per model host, shared by every request (thread-safe); making
    a client costs ~60 ms (its TLS context), more than a cached answer."""
    return httpx.Client(base_url=url, timeout=httpx.Timeout(timeout, connect=5.0),
                        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))


def open_stream(
    ctx: StudioContext,
    model: str,
    sampling: Sampling,
    *,
    messages: Optional[Sequence[Mapping[str, Any]]] = None,
    prompt: Optional[str] = None,
    endpoint: str = "chat",
    user: str = "",
    base_template: Optional[dict] = None,
) -> ChatStream:
    """Start one model's answer: resolve the id, check the request against the safety
    filter (a blocked one gets a plain refusal, logged), and send it to the model host.
    Errors before the first token raise ChatError; iterate the stream for the rest."""
    started = time.monotonic()
    resolved = resolve(ctx, model, base_template)
    rules = blocklist(ctx)
    stream = ChatStream(ctx, resolved.entry_id, endpoint, user, sampling.n, started, rules)
    for text in _texts(messages, prompt):
        reason = rules.blocks(text)
        if reason:
            log.warning("request to %s blocked by the safety filter (%s)", resolved.entry_id, reason)
            stream.refusal = True
            return stream
    body = {"model": resolved.spec, **sampling.model_dump()}
    body["messages" if messages is not None else "prompt"] = list(messages) if messages is not None else prompt
    headers = {"authorization": f"Bearer {ctx.settings.infer_token}"} if ctx.settings.infer_token else {}
    client = host_client(ctx.settings.infer_url, ctx.settings.chat_timeout_seconds)
    try:
        response = client.send(client.build_request("POST", "/generate", json=body, headers=headers), stream=True)
    except httpx.HTTPError as exc:
        record(ctx, user_name=user[:64], endpoint=endpoint, model=resolved.entry_id, status="error",
               latency_ms=(time.monotonic() - started) * 1000)
        raise ChatError(503, f"The model host at {ctx.settings.infer_url} does not answer ({type(exc).__name__}); "
                        "start it with `studio infer` (studio up starts one)", "server_error",
                        code="model_host_unreachable") from None
    if response.status_code != 200:
        try:
            error = json.loads(response.read())["error"]
        except (ValueError, KeyError, TypeError):
            error = {"message": f"the model host answered {response.status_code}", "type": "server_error"}
        response.close()
        status = response.status_code if 400 <= response.status_code < 600 else 503
        raise ChatError(status if status != 500 else 503, error.get("message", ""), error.get("type", "server_error"),
                        error.get("param"), error.get("code"))

    lines = response.iter_lines()
    try:
        first = json.loads(next(lines))
    except (StopIteration, ValueError, httpx.HTTPError):
        response.close()
        raise ChatError(503, "the model host closed the reply before it began", "server_error") from None
    stream.lines, stream.close = lines, response.close
    stream.prompt_tokens, stream.cached = first.get("prompt_tokens", 0), first.get("cached", False)
    return stream


def complete(ctx: StudioContext, model: str, sampling: Sampling, **kwargs: Any) -> ChatStream:
    """open_stream, read to the end."""
    stream = open_stream(ctx, model, sampling, **kwargs)
    for _ in stream:
        pass
    return stream


def template_of(ctx: StudioContext, models: Sequence[str]) -> Optional[dict]:
    """The template of the first trained model among `models`: bases compared with it are
    prompted the same way."""
    for model in models:
        try:
            parsed = parse_model_id(model)
        except ValueError:
            continue
        if parsed.is_base:
            continue
        with session_scope(ctx.engine) as session:
            job = session.get(Job, parsed.job_id)
            if job is not None:
                return JobConfig.model_validate_json(job.config_json).template.model_dump(mode="json")
    return None


def chat_many(ctx: StudioContext, models: Sequence[str], messages: Sequence[Mapping[str, Any]],
              sampling: Sampling, user: str = "") -> list[dict[str, Any]]:
    """One reply per model to the same conversation (POST /api/chat); the models' requests
    go to the host together, so it batches them."""
    from concurrent.futures import ThreadPoolExecutor

    if not models:
        raise ChatError(400, "models: pick at least one model", param="models")
    if len(models) > MAX_COLUMNS:
        raise ChatError(400, f"models: at most {MAX_COLUMNS} side by side", param="models")
    base_template = template_of(ctx, models)

    def one(model: str) -> dict[str, Any]:
        try:
            stream = complete(ctx, model, sampling, messages=messages, endpoint="studio", user=user,
                              base_template=base_template)
        except ChatError as exc:
            return {"model": model, "error": exc.message, "status": exc.status}
        return reply_summary(stream)

    with ThreadPoolExecutor(max_workers=len(models)) as pool:
        return list(pool.map(one, models))


def reply_summary(stream: ChatStream) -> dict[str, Any]:
    out = stream.usage.get("completion_tokens", 0)
    seconds = stream.latency_ms / 1000
    return {
        "model": stream.model,
        "choices": [{"index": i, "text": c.text, "finish_reason": c.finish_reason} for i, c in enumerate(stream.choices)],
        "text": stream.choices[0].text if stream.choices else "",
        "usage": stream.usage, "cached": stream.cached, "filtered": stream.filtered,
        "ttft_ms": stream.ttft_ms, "latency_ms": stream.latency_ms,
        "tokens_per_second": out / seconds if seconds > 0 and out else None,
    }
