"""Evaluation runs, on a worker. Read `run` top to bottom:

claim the run (a conditional UPDATE with a lease, like a job) -> start the model host's
engine in this process (worker.infer.engine: each base loaded once, checkpoints attached
as named adapters, rows of several adapters in one batch) -> for each chunk of rows, every
model answers through the chat renderer and generation code, and the answers are stored
(a requeued run picks up from the last stored chunk) -> teacher-forced perplexity of
each reference under each model, with the training's label masking -> scores per row,
metrics per model and per category -> succeeded.

The cancel flag is read between chunks; a run out of its lease stops writing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from sqlalchemy import update
from sqlalchemy.engine import Engine as DBEngine
from sqlmodel import select

from studio import lifecycle
from studio.core.basemodels import ModelAccess
from studio.core.config import TemplateSection
from studio.core.eval_metrics import Scored, summarize
from studio.core.templates import encode_rows
from studio.db import engine_for, session_scope
from studio.leases import EVALS, Cancelled, Lease
from studio.models import EvalRow, JobStatus, utcnow
from studio.settings import Settings
from worker.infer.engine import BASE, Engine, GenerateRequest, InferError, ModelSpec

log = logging.getLogger(__name__)

CHUNK_ROWS = 32  # rows answered (by every model) between stores, cancel checks and progress
BATCH_ROWS = 32  # the engine's most rows per generate call
PPL_BATCH = 8
PPL_MAX_LENGTH = 1024  # a longer prompt + reference is cut, as training cuts at max_length
GENERATE_SHARE = 0.85  # of the progress bar; perplexity and scoring take the rest


class EvalFailed(Exception):
    """A step failed in a way worth telling the user as it is."""


# --- the task -------------------------------------------------------------------------------


def run(settings: Settings, eval_id: int) -> str:
    """The Celery task's body: answer, score and record one evaluation run."""
    db = engine_for(settings.db_url)
    owner = lifecycle.owner_id()
    claimed = EVALS.claim(db, eval_id, owner, settings.lease_seconds)
    if claimed is None:
        log.info("eval %s: not claimable (finished, cancelled or held by a live worker)", eval_id)
        return "skipped"
    specs = [ModelSpec.model_validate(s) for s in claimed.specs]
    sampling = dict(claimed.sampling)

    def report(progress: float, stage: str) -> None:
        EVALS.update_ours(db, eval_id, owner, progress=round(progress, 4), stage=stage[:200])

    engine: Optional[Engine] = None
    lease = Lease(EVALS, db, eval_id, owner, settings.lease_seconds)
    try:
        with lease:
            engine = make_engine(settings)
            rows = load_rows(db, eval_id)
            started = time.perf_counter()
            answer_all(engine, specs, rows, sampling, report, lease.check,
                       store=lambda chunk: store_outputs(db, eval_id, chunk))
            answered = time.perf_counter()
            report(GENERATE_SHARE, "perplexity of the references")
            lease.check()
            engine.stop()
            perplexities = reference_nll(engine, specs, rows)
            measured = time.perf_counter()
            report(0.95, "scoring")
            results = score(db, eval_id, specs, rows, perplexities)
            log.info("eval %s: %d rows x %d models: answers %.1f s (models loaded in them), perplexity %.1f s, "
                     "scores %.1f s", eval_id, len(rows), len(specs), answered - started, measured - answered,
                     time.perf_counter() - measured)
        if lease.lost:
            return "lease lost"  # another attempt owns it now
        EVALS.update_ours(db, eval_id, owner, status=JobStatus.succeeded, progress=1.0, stage="done",
                          results=results, finished_at=utcnow(), lease_expires_at=None)
        return "succeeded"
    except Cancelled:
        if lease.lost and not lease.cancelled.is_set():
            return "lease lost"
        EVALS.update_ours(db, eval_id, owner, status=JobStatus.cancelled, stage="cancelled",
                          finished_at=utcnow(), lease_expires_at=None)
        return "cancelled"
    except Exception as exc:
        log.exception("eval %s failed", eval_id)
        reason = str(exc) if isinstance(exc, (EvalFailed, InferError)) else f"{type(exc).__name__}: {exc}"
        EVALS.update_ours(db, eval_id, owner, status=JobStatus.failed, stage="failed", error=reason[:4000],
                          finished_at=utcnow(), lease_expires_at=None)
        return "failed"
    finally:
        if engine is not None:
            engine.stop()


def make_engine(settings: Settings, batch_rows: int = BATCH_ROWS) -> Engine:
    """The chat host's engine, in this process, without its answer cache (a rerun of an
    evaluation must generate again)."""
    return Engine(
        settings.artifacts_root, ModelAccess.from_settings(settings), memory_gb=settings.infer_memory_gb,
        load_in=settings.infer_load_in, max_batch_rows=batch_rows, cache_entries=0,
    ).start()


@dataclass
class Item:
    """One row as the worker uses it."""

    index: int
    prompt: str
    input: str
    context: list[dict[str, Any]]
    reference: Optional[str]
    category: Optional[str]
    outputs: dict[str, str] = field(default_factory=dict)

    def messages(self) -> list[dict[str, str]]:
        """The conversation as chat sends it: an Alpaca input goes after a blank line
        (which the Alpaca template splits back into its input slot)."""
        content = self.prompt + (f"\n\n{self.input}" if self.input else "")
        return [{"role": m["role"], "content": m["content"]} for m in self.context] + [{"role": "user", "content": content}]

    def training_row(self) -> dict[str, Any]:
        """The row as training encoded it (prompt + reference), for teacher forcing."""
        if not self.context:
            return {"instruction": self.prompt, "input": self.input, "output": self.reference}
        user = {"role": "user", "content": self.prompt, "input": self.input}
        return {"messages": [*self.context, user, {"role": "assistant", "content": self.reference}]}


def load_rows(db: DBEngine, eval_id: int) -> list[Item]:
    with session_scope(db) as session:
        rows = session.exec(select(EvalRow).where(EvalRow.eval_id == eval_id).order_by(EvalRow.index)).all()
        return [Item(r.index, r.prompt, r.input, list(r.context), r.reference, r.category, dict(r.outputs)) for r in rows]


def store_outputs(db: DBEngine, eval_id: int, chunk: list[Item]) -> None:
    with session_scope(db) as session:
        for item in chunk:
            session.execute(
                update(EvalRow).where(EvalRow.eval_id == eval_id, EvalRow.index == item.index)
                .values(outputs=dict(item.outputs))
            )


# --- generation ----------------------------------------------------------------------------


class _Answer:
    """Collects one request's streamed text; set when it is done or failed."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.error: Optional[str] = None
        self.done = threading.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "delta" and event.get("index", 0) == 0:
            self.parts.append(event["text"])
        elif kind == "error":
            self.error = event.get("message") or "generation failed"
            self.done.set()
        elif kind == "done":
            self.done.set()


def answer_all(
    engine: Engine,
    specs: list[ModelSpec],
    rows: list[Item],
    sampling: dict[str, Any],
    report: Callable[[float, str], None] = lambda p, s: None,
    check: Callable[[], None] = lambda: None,
    store: Callable[[list[Item]], None] = lambda chunk: None,
    chunk_rows: int = CHUNK_ROWS,
    timeout_s: float = 3600,
) -> None:
    """Every model answers every row that has no answer from it yet, a chunk at a time:
    a chunk's requests are all submitted at once so the engine batches them (rows of
    different adapters of one base share a generate call)."""
    todo = [r for r in rows if any(s.id not in r.outputs for s in specs)]
    done = len(rows) - len(todo)
    for start in range(0, len(todo), chunk_rows):
        check()
        chunk = todo[start : start + chunk_rows]
        report(GENERATE_SHARE * done / max(1, len(rows)), f"answering rows {done + 1}-{done + len(chunk)} of {len(rows)}")
        waiting = []
        for item in chunk:
            for spec in specs:
                if spec.id in item.outputs:
                    continue
                answer = _Answer()
                request = GenerateRequest(
                    model=spec, messages=item.messages(), max_tokens=sampling.get("max_tokens", 128),
                    temperature=sampling.get("temperature", 0.0), top_p=sampling.get("top_p", 1.0),
                    seed=sampling.get("seed"),
                )
                engine.submit(request, answer)
                waiting.append((item, spec, answer))
        for item, spec, answer in waiting:
            if not answer.done.wait(timeout_s):
                raise EvalFailed(f"model {spec.id} did not answer row {item.index + 1} within {timeout_s:.0f} s")
            if answer.error:
                raise EvalFailed(f"model {spec.id} could not answer row {item.index + 1}: {answer.error}")
            item.outputs[spec.id] = "".join(answer.parts).strip()
        store(chunk)
        done += len(chunk)


# --- perplexity -----------------------------------------------------------------------------


def reference_nll(engine: Engine, specs: list[ModelSpec], rows: list[Item]) -> dict[str, list[tuple[float, int]]]:
    """Per model, per row: (summed negative log-likelihood, tokens) of the reference given
    the prompt, with the training's labels (studio.core.templates.encode_rows: loss on the
    reply and its EOS only). Rows without a reference get (nan, 0).

    Runs on the engine's loaded models once its thread has stopped (the engine's models
    have a single owner at a time)."""
    out: dict[str, list[tuple[float, int]]] = {}
    scored = [r for r in rows if r.reference is not None]
    for spec in specs:
        values = [(math.nan, 0)] * len(rows)
        if scored:
            base, adapter = engine.model_for(spec)
            template = TemplateSection.model_validate(spec.template)
            limit = min(PPL_MAX_LENGTH, getattr(base.model.config, "max_position_embeddings", None) or PPL_MAX_LENGTH)
            encoded = encode_rows(base.tokenizer, [r.training_row() for r in scored], limit, template)
            positions = {r.index: k for k, r in enumerate(rows)}
            for start in range(0, len(scored), PPL_BATCH):
                batch = [(positions[r.index], e) for r, e in zip(scored[start:start + PPL_BATCH],
                                                                encoded[start:start + PPL_BATCH]) if e is not None]
                for (position, _), value in zip(batch, _batch_nll(base, adapter, [e for _, e in batch], engine.device)):
                    values[position] = value
        out[spec.id] = values
    return out


@torch.inference_mode()
def _batch_nll(base, adapter: str, encoded: list, device: torch.device) -> list[tuple[float, int]]:
    if not encoded:
        return []
    pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else 0
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in encoded], device=device)
    mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in encoded], device=device)
    labels = torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in encoded], device=device)
    model = base.model
    if base.has_peft and adapter == BASE:
        with model.disable_adapter():
            logits, targets = _label_logits(model, ids, mask, labels)
    else:
        if base.has_peft:
            model.set_adapter(adapter)
        logits, targets = _label_logits(model, ids, mask, labels)
    losses = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    counted = (labels[:, 1:] != -100).sum(dim=1).tolist()
    out, start = [], 0
    for count in counted:  # the kept positions are in row order
        out.append((float(losses[start : start + count].sum()), int(count)))
        start += count
    return out


def _label_logits(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    """Logits at the positions that predict a label, and those labels. Projects only
    there (a 150k-token vocabulary over every position of a batch is gigabytes), as the
    demo's pre-training does; models that reshape their logits (soft-capping) or have no
    separate decoder get the full forward."""
    targets = labels[:, 1:]
    keep = targets != -100
    config = model.config
    decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings()
    if decoder is None or head is None or getattr(config, "final_logit_softcapping", None):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        return logits[keep], targets[keep]
    hidden = decoder()(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    return head(hidden[keep]), targets[keep]


# --- scores ---------------------------------------------------------------------------------


def score(db: DBEngine, eval_id: int, specs: list[ModelSpec], rows: list[Item],
          nll: dict[str, list[tuple[float, int]]]) -> list[dict[str, Any]]:
    """Store each row's scores; return each model's metrics, overall and per category."""
    per_model: dict[str, list[dict]] = {}
    results = []
    for spec in specs:
        items = [
            Scored(r.outputs.get(spec.id, ""), r.reference, r.category,
                   None if math.isnan(value) else value, tokens)
            for r, (value, tokens) in zip(rows, nll[spec.id])
        ]
        per_row, overall, categories = summarize(items)
        per_model[spec.id] = per_row
        results.append({"model": spec.id, "metrics": overall, "categories": categories})
    with session_scope(db) as session:
        for k, item in enumerate(rows):
            session.execute(
                update(EvalRow).where(EvalRow.eval_id == eval_id, EvalRow.index == item.index)
                .values(scores={spec.id: per_model[spec.id][k] for spec in specs})
            )
    return results
