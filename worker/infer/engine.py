"""The inference engine behind `studio infer`.

- Each base model is loaded once. Every checkpoint of that base is attached to it as a
  named PEFT adapter (`load_adapter`), never as a second copy of the base; full
  fine-tunes are models of their own.
- Requests that arrive together are batched: rows for different adapters of one base go
  through one `generate` with peft's `adapter_names=` ("__base__" for the base). DoRA
  adapters are not mixed: their rows run in one batch per adapter (logged).
- Every row has its own sampling (temperature, top-p, seed) and its own stops: a logits
  processor picks each row's token (greedy rows take the argmax, exactly what
  `generate(do_sample=False)` would), streams it out, and tells `generate` which rows are
  done.
- A memory budget: the least recently used adapters, then bases, are unloaded to make
  room; something that cannot fit even then is refused with a clear error.

Prompts are rendered by studio.core.templates from the job's frozen template, the same
renderer training used; a reply stops at EOS (trained after every reply) or at the
template's end-of-reply marker.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from studio.core.basemodels import ModelAccess, check_base_model, resolve_base_model
from studio.core.chat_prompt import messages_row
from studio.core.config import TemplateSection
from studio.core.paths import resolve_inside
from studio.core.templates import CHAT_FORMATS, TemplateError, encode_prompt, prefix_ids
from worker.infer.cache import CachedAnswer, ResponseCache, cache_key

log = logging.getLogger("studio.infer")

BASE = "__base__"  # peft's name for "no adapter" in adapter_names
GIB = 1024**3


class InferError(Exception):
    """A request the host cannot serve, with the HTTP status and OpenAI error type."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


class ModelSpec(BaseModel):
    """What to run, resolved by the web app from a model id (studio.core.model_ids)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(max_length=200)
    base: str = Field(max_length=500, description="the base as the job names it: demo, a hub id or a folder")
    adapter: Optional[str] = Field(default=None, max_length=500, description="PEFT folder, relative to the artifacts")
    full: Optional[str] = Field(default=None, max_length=500, description="full fine-tune folder, relative")
    template: dict[str, Any] = Field(default_factory=dict, description="the job's TemplateSection")
    trust_remote_code: bool = False


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelSpec
    messages: Optional[list[dict[str, Any]]] = Field(default=None, max_length=200)
    prompt: Optional[str] = Field(default=None, max_length=200_000)
    max_tokens: int = Field(default=128, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: Optional[int] = Field(default=None, ge=0, le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=8)
    stop: list[str] = Field(default_factory=list, max_length=8)


Notify = Callable[[dict[str, Any]], None]


class Pending:
    """One request in the engine: its events go to `notify` (thread-safe)."""

    def __init__(self, request: GenerateRequest, notify: Notify):
        self.request, self.notify = request, notify
        self.cancelled = threading.Event()  # the client went away
        self.prompt_ids: list[int] = []
        self.adapter = BASE
        self.mixable = True
        self.key: Optional[str] = None
        self.rows: list[Row] = []
        self.submitted = time.monotonic()

    def fail(self, error: InferError) -> None:
        self.notify({"type": "error", "status": error.status, "message": error.message, "kind": error.kind,
                     "code": error.code})

    def start(self, cached: bool) -> None:
        self.notify({"type": "start", "prompt_tokens": len(self.prompt_ids), "cached": cached})

    def answer_cached(self, answer: CachedAnswer) -> None:
        self.start(cached=True)
        for index, (text, reason, _tokens) in enumerate(answer.choices):
            self.notify({"type": "delta", "index": index, "text": text})
            self.notify({"type": "end", "index": index, "finish_reason": reason})
        self._done([tokens for _, _, tokens in answer.choices], cached=True)

    def finish(self, cache: ResponseCache) -> None:
        choices = tuple((r.text, r.finish_reason or "length", r.count) for r in self.rows)
        if all(reason != "cancelled" for _, reason, _ in choices):
            cache.put(self.key, CachedAnswer(choices, len(self.prompt_ids)))
        self._done([r.count for r in self.rows], cached=False)

    def _done(self, completion: list[int], cached: bool) -> None:
        tokens = sum(completion)
        self.notify({"type": "done", "cached": cached, "usage": {
            "prompt_tokens": len(self.prompt_ids), "completion_tokens": tokens,
            "total_tokens": len(self.prompt_ids) + tokens}})


@dataclass
class Row:
    """One choice of one request inside a batch."""

    pending: Pending
    index: int
    tokenizer: Any
    eos_ids: frozenset[int]
    stops: tuple[str, ...]
    generator: Optional[torch.Generator]
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    count: int = 0
    done: bool = False
    finish_reason: Optional[str] = None

    @property
    def request(self) -> GenerateRequest:
        return self.pending.request

    def take(self, token: int) -> None:
        """Record the token picked for this row; stream what is safe to show."""
        self.count += 1
        if self.pending.cancelled.is_set():
            return self._end("cancelled", self.text)
        if token in self.eos_ids:
            return self._end("stop", self.text)
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = min((p for p in (text.find(s) for s in self.stops) if p >= 0), default=-1)
        if cut >= 0:
            return self._end("stop", text[:cut])
        self.text = text
        if self.count >= self.request.max_tokens:
            return self._end("length", text)
        self._send(len(text) - self._held_back(text))

    def _held_back(self, text: str) -> int:
        # A partial UTF-8 character, or a tail that may become a stop string, waits.
        hold = 1 if text.endswith("\ufffd") else 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        return hold

    def _send(self, upto: int) -> None:
        if upto > self.sent:
            self.pending.notify({"type": "delta", "index": self.index, "text": self.text[self.sent : upto]})
            self.sent = upto

    def _end(self, reason: str, text: str) -> None:
        self.text, self.done, self.finish_reason = text, True, reason
        self._send(len(text))
        self.pending.notify({"type": "end", "index": self.index, "finish_reason": reason})


class RowPicker(LogitsProcessor):
    """Picks every row's next token by that row's own settings and leaves `generate`
    only that token to choose (its greedy step then takes exactly it)."""

    def __init__(self, rows: list[Row], pad_id: int):
        self.rows, self.pad_id = rows, pad_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        greedy = scores.argmax(dim=-1).tolist()
        chosen = []
        for i, row in enumerate(self.rows):
            if row.done:
                chosen.append(self.pad_id)
                continue
            token = greedy[i] if row.request.temperature <= 0 else _sample(scores[i], row)
            chosen.append(token)
            row.take(token)
        picked = torch.full_like(scores, float("-inf"))
        picked[torch.arange(len(chosen), device=scores.device), torch.tensor(chosen, device=scores.device)] = 0.0
        return picked


def _sample(logits: torch.Tensor, row: Row) -> int:
    probs = torch.softmax(logits.float() / row.request.temperature, dim=-1)
    if row.request.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        keep = ordered.cumsum(0) - ordered < row.request.top_p  # the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter_(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs, 1, generator=row.generator))


class RowsDone(StoppingCriteria):
    def __init__(self, rows: list[Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.tensor([row.done for row in self.rows], device=input_ids.device)


@dataclass
class Adapter:
    name: str
    folder: Path
    bytes: int
    mixable: bool
    used_at: float = 0.0


@dataclass
class LoadedBase:
    key: str
    model: Any
    tokenizer: Any
    bytes: int
    adapters: OrderedDict[str, Adapter] = field(default_factory=OrderedDict)
    used_at: float = 0.0

    @property
    def has_peft(self) -> bool:
        return bool(self.adapters)


class Engine:
    """Models in memory and the batching loop (one thread owns the models)."""

    def __init__(
        self,
        artifacts_root: Path,
        access: ModelAccess,
        memory_gb: float = 0.0,
        load_in: Literal["none", "8bit", "4bit"] = "none",
        max_batch_rows: int = 32,
        batch_window_s: float = 0.005,
        cache_entries: int = 2048,
    ):
        self.root = Path(artifacts_root).resolve()
        self.access = access
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.load_in = load_in
        self.budget = int(memory_gb * GIB) if memory_gb > 0 else _default_budget(self.device)
        self.max_batch_rows, self.window = max_batch_rows, batch_window_s
        self.cache = ResponseCache(cache_entries)
        self.bases: OrderedDict[str, LoadedBase] = OrderedDict()
        self._queue: queue.Queue[Pending] = queue.Queue()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.counts = {"batches": 0, "rows": 0, "mixed_batches": 0, "grouped_batches": 0, "evictions": 0}

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> "Engine":
        self._thread = threading.Thread(target=self._loop, name="infer-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def submit(self, request: GenerateRequest, notify: Notify) -> Pending:
        """Queue a request; its events (start, delta, end, done or error) go to notify."""
        pending = Pending(request, notify)
        if not self._from_cache(pending):
            self._queue.put(pending)
        return pending

    def _from_cache(self, pending: Pending) -> bool:
        """Answer a deterministic request for a model already in memory from the cache at
        once, without waiting behind the batch the engine thread is running."""
        request = pending.request
        base = self.bases.get(self._base_key(request.model))
        if base is None or cache_key("", [], request.model_dump(include={"temperature", "seed"})) is None:
            return False
        try:
            name = self._adapter_name(request.model)[0] if request.model.adapter else BASE
            if name != BASE and name not in base.adapters:
                return False
            pending.adapter, pending.prompt_ids = name, self._encode(base.tokenizer, request)
        except (InferError, OSError):
            return False  # the engine thread says what is wrong
        params = request.model_dump(exclude={"model", "messages", "prompt"})
        hit = self.cache.get(cache_key(self._model_version(base, pending), pending.prompt_ids, params), count_miss=False)
        if hit is None:
            return False
        base.used_at = time.monotonic()  # a hit is a use: it keeps the model from eviction
        adapter = base.adapters.get(name)  # the engine thread may unload it meanwhile
        if adapter is not None:
            adapter.used_at = base.used_at
        pending.answer_cached(hit)
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "memory_budget_bytes": self.budget,
            "memory_used_bytes": self._used(),
            "load_in": self.load_in,
            "bases": [
                {"key": b.key, "bytes": b.bytes, "adapters": [{"folder": str(a.folder), "bytes": a.bytes,
                                                               "mixable": a.mixable} for a in b.adapters.values()]}
                for b in self.bases.values()
            ],
            "cache": self.cache.stats(),
            **self.counts,
        }

    # --- the loop -----------------------------------------------------------------------

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        import peft  # noqa: F401  # seconds to import: paid now, not by the first chat with a checkpoint
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch, rows = [first], first.request.n
            deadline = time.monotonic() + self.window
            while rows < self.max_batch_rows:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                batch.append(more)
                rows += more.request.n
            try:
                self._serve(batch)
            except Exception as exc:  # never let one batch take the host down
                log.exception("batch failed")
                for pending in batch:
                    if not pending.rows or not all(r.done for r in pending.rows):
                        pending.fail(InferError(503, f"generation failed: {type(exc).__name__}: {exc}", "server_error"))

    def _serve(self, batch: list[Pending]) -> None:
        groups: OrderedDict[str, list[Pending]] = OrderedDict()
        for pending in batch:
            groups.setdefault(self._base_key(pending.request.model), []).append(pending)
        for key, group in groups.items():
            try:
                base = self._ensure_base(key, group[0].request.model)
            except InferError as exc:
                for pending in group:
                    pending.fail(exc)
                continue
            ready = [p for p in group if self._prepare(base, p, pinned=group)]
            if ready:
                self._run(base, ready)

    def _prepare(self, base: LoadedBase, pending: Pending, pinned: list[Pending]) -> bool:
        """Attach the adapter and encode the prompt; answer from the cache when it can.
        Returns whether the request still needs generating."""
        request = pending.request
        try:
            pending.adapter, pending.mixable = self._ensure_adapter(base, request.model, pinned)
            pending.prompt_ids = self._encode(base.tokenizer, request)
        except InferError as exc:
            pending.fail(exc)
            return False
        params = request.model_dump(exclude={"model", "messages", "prompt"})
        pending.key = cache_key(self._model_version(base, pending), pending.prompt_ids, params)
        hit = self.cache.get(pending.key)
        if hit is not None:
            pending.answer_cached(hit)
            return False
        pending.start(cached=False)
        return True

    def _model_version(self, base: LoadedBase, pending: Pending) -> str:
        adapter = base.adapters.get(pending.adapter)
        return f"{base.key}|{adapter.folder if adapter else BASE}|{pending.adapter}"

    def _encode(self, tokenizer, request: GenerateRequest) -> list[int]:
        if (request.messages is None) == (request.prompt is None):
            raise InferError(400, "give either messages or prompt")
        if request.prompt is not None:
            return prefix_ids(tokenizer) + tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
        try:
            template = TemplateSection.model_validate(request.model.template)
            return encode_prompt(tokenizer, messages_row(request.messages, template.name), template)
        except (ValueError, TemplateError) as exc:
            raise InferError(400, str(exc), code="invalid_messages") from None

    def _run(self, base: LoadedBase, ready: list[Pending]) -> None:
        eos = _eos_ids(base)
        rows = []
        for pending in ready:
            request = pending.request
            stops = tuple(s for s in request.stop if s) + _template_stops(request)
            for index in range(request.n):
                generator = None
                if request.temperature > 0:
                    generator = torch.Generator(device=self.device)
                    seed = request.seed + index if request.seed is not None else int.from_bytes(os.urandom(7), "big")
                    generator.manual_seed(seed % (2**63))
                row = Row(pending, index, base.tokenizer, eos, stops, generator)
                pending.rows.append(row)
                rows.append(row)
        self.counts["batches"] += 1
        self.counts["rows"] += len(rows)
        if all(p.mixable for p in ready) or not base.has_peft:
            if len({p.adapter for p in ready}) > 1:
                self.counts["mixed_batches"] += 1
            self._generate(base, rows, [r.pending.adapter for r in rows] if base.has_peft else None)
        else:
            names = list(dict.fromkeys(r.pending.adapter for r in rows))
            log.info("%s: %d adapters cannot share a batch (DoRA); running %d grouped batches",
                     base.key, len(names), len(names))
            self.counts["grouped_batches"] += len(names)
            for name in names:
                self._generate(base, [r for r in rows if r.pending.adapter == name], name)
        for pending in ready:
            pending.finish(self.cache)

    def _generate(self, base: LoadedBase, rows: list[Row], adapters: list[str] | str | None) -> None:
        tokenizer, model = base.tokenizer, base.model
        pad = tokenizer.pad_token_id
        width = max(len(r.pending.prompt_ids) for r in rows)
        # Left padding keeps every prompt's last token in the last column.
        ids = torch.tensor([[pad] * (width - len(r.pending.prompt_ids)) + r.pending.prompt_ids for r in rows],
                           device=self.device)
        mask = torch.tensor([[0] * (width - len(r.pending.prompt_ids)) + [1] * len(r.pending.prompt_ids) for r in rows],
                            device=self.device)
        config = GenerationConfig(
            do_sample=False, max_new_tokens=max(r.request.max_tokens for r in rows) + 1,
            eos_token_id=sorted(_eos_ids(base)), pad_token_id=pad, bos_token_id=tokenizer.bos_token_id,
        )
        kwargs: dict[str, Any] = {}
        context: Any = _nothing()
        if isinstance(adapters, list):
            kwargs["adapter_names"] = adapters
        elif adapters == BASE:
            context = model.disable_adapter()
        elif adapters is not None:
            model.set_adapter(adapters)
        with context:
            model.generate(
                input_ids=ids, attention_mask=mask, generation_config=config,
                logits_processor=LogitsProcessorList([RowPicker(rows, pad)]),
                stopping_criteria=StoppingCriteriaList([RowsDone(rows)]), **kwargs,
            )
        for row in rows:
            if not row.done:
                row._end("length", row.text)

    # --- models in memory ---------------------------------------------------------------

    def model_for(self, spec: ModelSpec) -> tuple[LoadedBase, str]:
        """The loaded base for this model with its adapter attached, and the adapter's
        name in peft (BASE for the base itself), loading either as needed. For work on
        the engine's models outside its loop (perplexity): call it only while the engine
        thread is not running, since that thread owns the models while it runs."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("model_for: stop the engine first; its thread owns the models while it runs")
        base = self._ensure_base(self._base_key(spec), spec)
        adapter, _mixable = self._ensure_adapter(base, spec, [])
        return base, adapter

    def _base_key(self, spec: ModelSpec) -> str:
        if spec.full:
            return f"full:{spec.full}"
        return f"base:{spec.base}:{self.load_in}"

    def _used(self) -> int:
        return sum(b.bytes + sum(a.bytes for a in b.adapters.values()) for b in self.bases.values())

    def _make_room(self, needed: int, what: str, keep_base: Optional[str], keep_adapters: set[str]) -> None:
        """Unload least recently used adapters and bases until `needed` more bytes fit."""
        if needed > self.budget:
            raise InferError(503, f"{what} needs about {needed / GIB:.2f} GB, more than the model host's memory "
                             f"budget of {self.budget / GIB:.2f} GB (STUDIO_INFER_MEMORY_GB)", "server_error",
                             "over_memory_budget")
        while self._used() + needed > self.budget:
            victims = [(a.used_at, b, a) for b in self.bases.values() for a in b.adapters.values()
                       if a.name not in keep_adapters]
            victims += [(b.used_at, b, None) for b in self.bases.values() if b.key != keep_base]
            if not victims:
                raise InferError(503, f"{what} needs about {needed / GIB:.2f} GB and the models serving this batch "
                                 f"fill the budget of {self.budget / GIB:.2f} GB (STUDIO_INFER_MEMORY_GB); try again "
                                 "or raise the budget", "server_error", "over_memory_budget")
            _, base, adapter = min(victims, key=lambda v: v[0])
            if adapter is not None:
                self._unload_adapter(base, adapter)
            else:
                log.info("unloading %s (least recently used)", base.key)
                del self.bases[base.key]
            self.counts["evictions"] += 1
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _ensure_base(self, key: str, spec: ModelSpec) -> LoadedBase:
        now = time.monotonic()
        if key in self.bases:
            self.bases.move_to_end(key)
            self.bases[key].used_at = now
            return self.bases[key]
        problem = check_base_model(spec.base, self.access, spec.trust_remote_code)
        if problem:
            raise InferError(400, problem, code="base_model_refused")
        # The tokenizer is always the base's: training used it, and checkpoints may not carry one.
        tokenizer_source = resolve_base_model(spec.base)
        source = str(self._artifact(spec.full, spec.id)) if spec.full else tokenizer_source
        self._make_room(_estimate_bytes(source, self.device, self.load_in), f"model {spec.id}", None, set())
        model, tokenizer = self._load(source, tokenizer_source, spec)
        size = _model_bytes(model)
        base = LoadedBase(key, model, tokenizer, size, used_at=now)
        self.bases[key] = base
        if self._used() > self.budget:
            del self.bases[key]
            raise InferError(503, f"model {spec.id} takes {size / GIB:.2f} GB, more than fits in the budget of "
                             f"{self.budget / GIB:.2f} GB (STUDIO_INFER_MEMORY_GB)", "server_error", "over_memory_budget")
        log.info("loaded %s (%.1f MB) on %s", key, size / 1e6, self.device)
        return base

    def _load(self, source: str, tokenizer_source: str, spec: ModelSpec):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=spec.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                source, trust_remote_code=spec.trust_remote_code,
                dtype=torch.float32 if self.device.type == "cpu" else "auto",
                **self._quantization(),
            )
        except Exception as exc:
            detail = (str(exc).strip().splitlines() or [""])[0][:300]
            raise InferError(503, f"could not load model {spec.id} ({type(exc).__name__}: {detail})", "server_error",
                             "model_load_failed") from None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # as training did
        if self.load_in == "none":
            model.to(self.device)
        return model.eval(), tokenizer

    def _quantization(self) -> dict[str, Any]:
        """8-bit or 4-bit (NF4) loading of big bases through bitsandbytes (GPU hosts)."""
        if self.load_in == "none":
            return {}
        from transformers import BitsAndBytesConfig

        if self.load_in == "8bit":
            config = BitsAndBytesConfig(load_in_8bit=True)
        else:
            config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                        bnb_4bit_compute_dtype=torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        return {"quantization_config": config, "device_map": {"": 0 if self.device.type == "cuda" else "cpu"}}

    def _artifact(self, relpath: str, model_id: str) -> Path:
        try:
            folder = resolve_inside(self.root, relpath)
        except ValueError:
            raise InferError(404, f"model {model_id}: its folder is outside the artifact root", code="model_not_found") from None
        if not folder.is_dir():
            raise InferError(404, f"model {model_id}: {relpath} is gone (pruned or deleted)", code="model_not_found")
        return folder

    def _ensure_adapter(self, base: LoadedBase, spec: ModelSpec, pinned: list[Pending]) -> tuple[str, bool]:
        if not spec.adapter:
            return BASE, True
        name, folder, config_file, weights = self._adapter_name(spec)
        now = time.monotonic()
        if name in base.adapters:
            base.adapters.move_to_end(name)
            base.adapters[name].used_at = now
            return name, base.adapters[name].mixable
        keep = {p.adapter for p in pinned if p.adapter != BASE}
        self._make_room(weights.stat().st_size, f"adapter {spec.id}", base.key, keep)
        try:
            adapter_config = json.loads(config_file.read_text())
        except ValueError:
            raise InferError(404, f"model {spec.id}: adapter_config.json cannot be read", code="model_not_found") from None
        from peft import PeftModel

        try:
            if base.has_peft:
                base.model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
            else:
                base.model = PeftModel.from_pretrained(base.model, str(folder), adapter_name=name, is_trainable=False)
        except Exception as exc:
            raise InferError(503, f"could not attach {spec.id} to its base ({type(exc).__name__}: {str(exc)[:300]})",
                             "server_error", "adapter_load_failed") from None
        base.model.eval()
        size = sum(p.numel() * p.element_size() for n, p in base.model.named_parameters() if name in n)
        mixable = not adapter_config.get("use_dora", False) and adapter_config.get("peft_type", "LORA") == "LORA"
        base.adapters[name] = Adapter(name, folder, size, mixable, used_at=now)
        log.info("attached %s to %s as adapter %s (%.2f MB%s)", spec.id, base.key, name, size / 1e6,
                 "" if mixable else ", not mixable")
        return name, mixable

    def _adapter_name(self, spec: ModelSpec) -> tuple[str, Path, Path, Path]:
        """The adapter's name in peft, its folder, config and weights files."""
        folder = self._artifact(spec.adapter, spec.id)
        config_file, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
        if not config_file.is_file() or not weights.is_file():
            raise InferError(404, f"model {spec.id}: {spec.adapter} is not a PEFT adapter folder", code="model_not_found")
        # A re-written folder (same path, new weights) is a new adapter.
        stamp = f"{folder}|{weights.stat().st_mtime_ns}|{weights.stat().st_size}"
        return "a" + hashlib.sha1(stamp.encode()).hexdigest()[:16], folder, config_file, weights

    def _unload_adapter(self, base: LoadedBase, adapter: Adapter) -> None:
        log.info("detaching adapter %s (%s) from %s (least recently used)", adapter.name, adapter.folder, base.key)
        if len(base.adapters) == 1:
            base.model = base.model.unload()  # the plain base again, LoRA layers removed
        else:
            base.model.delete_adapter(adapter.name)
        del base.adapters[adapter.name]


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _eos_ids(base: LoadedBase) -> frozenset[int]:
    ids = {base.tokenizer.eos_token_id}
    configured = getattr(base.model.generation_config, "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, list) else {configured}
    return frozenset(i for i in ids if i is not None)


def _template_stops(request: GenerateRequest) -> tuple[str, ...]:
    """The template's end-of-reply text (ChatML's <|im_end|>...), for tokenizers where it
    is plain text rather than the EOS token."""
    if request.messages is None:
        return ()
    fmt = CHAT_FORMATS.get(str(request.model.template.get("name", "alpaca")))
    end = fmt.reply_end.strip() if fmt else ""
    return (end,) if end else ()


def _model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _estimate_bytes(source: str, device: torch.device, load_in: str) -> int:
    """Memory a model folder will take once loaded (weights on disk, scaled to the dtype
    it loads in). 0 for hub ids not on disk: checked after loading instead."""
    folder = Path(source)
    if not folder.is_dir():
        return 0
    on_disk = sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    stored = {"float32": 4, "bfloat16": 2, "float16": 2}.get(str(config.get("dtype") or config.get("torch_dtype")), 4)
    loaded = {"8bit": 1.0, "4bit": 0.5}.get(load_in, 4 if device.type == "cpu" else stored)
    return int(on_disk * loaded / stored)


def _default_budget(device: torch.device) -> int:
    """Without STUDIO_INFER_MEMORY_GB: 90% of the GPU, or half of this machine's memory."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.9)
    import psutil

    return int(psutil.virtual_memory().total * 0.5)
