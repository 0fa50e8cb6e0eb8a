"""Evaluation runs: automatic metrics for a few models on one evaluation set.

`create_eval` checks the request, resolves every model id the way chat does, picks the
rows (a dataset's validation split or all of it, or typed prompts) and stores them with
the run, then puts the run's id on the workers' queue. The worker (worker/evaluate.py)
generates every model's answers in batches, scores them and fills in the rows and the
results. The rating campaigns build on this: their answers come from an evaluation run.
"""

from __future__ import annotations

import logging
import random
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from datetime import timedelta

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from studio.core.config import ConfigError, DataSection, JobConfig, TrainingSection
from studio.core.datasets import stored_split
from studio.core.model_ids import parse_model_id
from studio.core.templates import conversation, reference_text
from studio.db import session_scope
from studio.leases import EVALS, REQUEUED_STAGE
from studio.models import (
    Checkpoint, DatasetVersion, EvalPublic, EvalResult, EvalRow, EvalRowPublic, EvalRun, Job, JobLog, JobStatus, utcnow,
)
from studio.services import chat as chat_service
from studio.services.context import NotFound, StudioContext
from studio.services.datasets import load_version

log = logging.getLogger(__name__)

MAX_MODELS = 8
MAX_ROWS = 5000  # a run's rows live in the DB and every model answers each one
MAX_PROMPT_CHARS = 20_000
MAX_PAGE = 200
CATEGORY_FIELD = "category"


def _each_once(models: list[str]) -> list[str]:
    models = [m.strip() for m in models]
    if len(set(models)) != len(models):
        raise ValueError("each model may appear once")
    return models


# An evaluation run's models and a campaign's contestants: ids as typed, space around one
# dropped, each at most once (a model compared with itself tells nothing).
ModelIds = Annotated[list[str], AfterValidator(_each_once)]


class EvalRefused(Exception):
    """The run cannot be changed now (e.g. cancelling one that has finished): 409."""


class EvalSampling(BaseModel):
    """How every model answers: greedy by default, so a rerun gives the same answers."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0: greedy (the most likely token).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Sample from the smallest set of tokens "
                         "holding this much probability.")
    max_tokens: int = Field(default=128, ge=1, le=2048, description="Most new tokens per answer.")
    seed: Optional[int] = Field(default=0, ge=0, le=2**63 - 1, description="Same seed, same answers when sampling.")


class EvalRequest(BaseModel):
    """What POST /api/evals takes: models, an evaluation set and sampling."""

    model_config = ConfigDict(extra="forbid")
    models: ModelIds = Field(min_length=1, max_length=MAX_MODELS,
                             description="demo, a base, job-N or job-N/checkpoint-S")
    dataset_id: Optional[int] = Field(default=None, ge=1, le=2**63 - 1, description="The evaluation set's dataset")
    split: Literal["validation", "all"] = Field(default="validation",
                                                description="The dataset's validation rows, or all of them")
    max_rows: int = Field(default=256, ge=1, le=MAX_ROWS, description="Use at most this many rows")
    prompts: Optional[list[str]] = Field(default=None, min_length=1, max_length=MAX_ROWS,
                                         description="Typed prompts instead of a dataset (no references)")
    sampling: EvalSampling = Field(default_factory=EvalSampling)

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, prompts: Optional[list[str]]) -> Optional[list[str]]:
        if prompts is None:
            return None
        for i, text in enumerate(prompts):
            if not text.strip():
                raise ValueError(f"prompt {i + 1} is empty")
            if len(text) > MAX_PROMPT_CHARS:
                raise ValueError(f"prompt {i + 1} is longer than {MAX_PROMPT_CHARS} characters")
        return prompts


# --- the evaluation set ---------------------------------------------------------------


def held_out(rows: list[dict], fraction: float, seed: int) -> list[dict]:
    """The rows a job holds out for validation (worker.recipe.split_rows): the dataset's
    stored split, else the same seeded shuffle."""
    stored = stored_split(rows)
    if stored is not None:
        return stored[1]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_held = min(int(round(len(rows) * fraction)), len(rows) - 1)
    return [rows[i] for i in order[:n_held]]


def _split_settings(ctx: StudioContext, models: list[str], version_id: int) -> tuple[float, int]:
    """Hold out what the first evaluated job that trained on this version held out; else
    the defaults a new job would use."""
    for model in models:
        parsed = parse_model_id(model)
        if parsed.is_base:
            continue
        with session_scope(ctx.engine) as session:
            job = session.get(Job, parsed.job_id)
            if job is not None and job.dataset_version_id == version_id:
                config = JobConfig.model_validate_json(job.config_json)
                return config.data.validation_fraction, config.training.seed
    return DataSection().validation_fraction, TrainingSection().seed


def eval_row_of(index: int, row: dict) -> EvalRow:
    """A dataset row as an evaluation row: the last user turn is the prompt, the reply
    after it the reference; earlier turns stay in `context`."""
    category = row.get(CATEGORY_FIELD)
    if "messages" in row:
        turns = conversation(row)
        if turns and turns[-1]["role"] == "assistant":
            turns = turns[:-1]
        last = turns[-1] if turns else {"content": ""}
        prompt, context, extra = str(last.get("content", "")), turns[:-1], ""
    else:  # Alpaca: the instruction and input as the row has them
        prompt, context, extra = str(row.get("instruction") or ""), [], str(row.get("input") or "")
    return EvalRow(
        index=index,
        prompt=prompt,
        input=extra,
        context=context,
        reference=reference_text(row),
        category=str(category)[:200] if category not in (None, "") else None,
    )


def _rows_for(ctx: StudioContext, request: EvalRequest) -> tuple[Optional[int], list[EvalRow]]:
    if request.prompts is not None:
        if request.dataset_id is not None:
            raise ConfigError(["prompts: give either prompts or dataset_id, not both"])
        rows = [EvalRow(index=i, prompt=p, reference=None) for i, p in enumerate(request.prompts[: request.max_rows])]
        return None, rows
    if request.dataset_id is None:
        raise ConfigError(["dataset_id: pick an evaluation set (a dataset), or type prompts"])
    version, snapshot = load_version(ctx, request.dataset_id)
    source = list(snapshot.rows)
    if request.split == "validation":
        fraction, seed = _split_settings(ctx, request.models, version.id)
        source = held_out(source, fraction, seed)
    source = [r for r in source if "text" not in r][: request.max_rows]  # general-text rows have no prompt
    if not source:
        raise ConfigError([
            f"split: dataset {request.dataset_id} has no {request.split} rows to evaluate on"
            + ("; split it in the Datasets tab, or use split 'all'" if request.split == "validation" else "")
        ])
    return version.id, [eval_row_of(i, row) for i, row in enumerate(source)]


# --- runs -----------------------------------------------------------------------------


def _resolve(ctx: StudioContext, models: list[str]) -> list[dict[str, Any]]:
    """Each model as the engine's ModelSpec; a base is prompted with the template of the
    job it is compared with, as in chat."""
    base_template = chat_service.template_of(ctx, models)
    problems, specs = [], []
    for i, model in enumerate(models):
        try:
            specs.append(chat_service.resolve(ctx, model, base_template).spec)
        except chat_service.ChatError as exc:
            problems.append(f"models[{i}]: {exc.message}")
    if problems:
        raise ConfigError(problems)
    return specs


def create_eval(ctx: StudioContext, request: EvalRequest, user: Optional[str] = None) -> EvalPublic:
    """Validate, store the run and its rows as queued, then put its id on the queue."""
    from worker.celery_app import enqueue_eval

    specs = _resolve(ctx, request.models)
    version_id, rows = _rows_for(ctx, request)
    with session_scope(ctx.engine) as session:
        run = EvalRun(
            models=[spec["id"] for spec in specs], specs=specs,  # ids as chat names them: job-01 is job-1
            dataset_id=request.dataset_id, dataset_version_id=version_id,
            split=request.split if request.prompts is None else "all", max_rows=request.max_rows,
            row_count=len(rows), sampling=request.sampling.model_dump(), created_by=user or "",
            max_attempts=ctx.settings.max_attempts, stage="waiting for a worker",
        )
        session.add(run)
        session.flush()
        eval_id = run.id
        for row in rows:
            row.eval_id = eval_id
            session.add(row)
    try:
        enqueue_eval(ctx.celery, eval_id)
    except Exception as exc:  # the broker is down: say so on the run
        log.exception("could not enqueue eval %s", eval_id)
        with session_scope(ctx.engine) as session:
            run = session.get(EvalRun, eval_id)
            run.status, run.finished_at = JobStatus.failed, utcnow()
            run.error = f"Could not reach the job queue ({type(exc).__name__}: {exc}). Is the broker running?"
    return get_eval(ctx, eval_id)


def _public(run: EvalRun) -> EvalPublic:
    return EvalPublic(
        results=[EvalResult.model_validate(r) for r in run.results],
        **run.model_dump(exclude={"results", "specs", "lease_owner", "lease_expires_at", "attempts", "max_attempts"}),
    )


def get_eval(ctx: StudioContext, eval_id: int) -> EvalPublic:
    """Status, progress and, once it succeeded, each model's metrics."""
    with session_scope(ctx.engine) as session:
        run = session.get(EvalRun, eval_id)
        if run is None:
            raise NotFound(f"evaluation {eval_id} does not exist")
        return _public(run)


def list_evals(ctx: StudioContext, limit: int = 50) -> list[EvalPublic]:
    """The newest runs first."""
    with session_scope(ctx.engine) as session:
        runs = session.exec(select(EvalRun).order_by(EvalRun.id.desc()).limit(max(1, min(limit, MAX_PAGE)))).all()
        return [_public(r) for r in runs]


def eval_rows(ctx: StudioContext, eval_id: int, offset: int = 0, limit: int = 50) -> list[EvalRowPublic]:
    """A page of the run's rows: prompt, reference, each model's answer and scores."""
    with session_scope(ctx.engine) as session:
        if session.get(EvalRun, eval_id) is None:
            raise NotFound(f"evaluation {eval_id} does not exist")
        rows = session.exec(
            select(EvalRow).where(EvalRow.eval_id == eval_id).order_by(EvalRow.index)
            .offset(max(0, offset)).limit(max(0, min(limit, MAX_PAGE)))
        ).all()
        return [EvalRowPublic.model_validate(r, from_attributes=True) for r in rows]


def count_rows(ctx: StudioContext, eval_id: int) -> int:
    with session_scope(ctx.engine) as session:
        return session.exec(select(func.count()).select_from(EvalRow).where(EvalRow.eval_id == eval_id)).one()


def cancel_eval(ctx: StudioContext, eval_id: int) -> EvalPublic:
    """A queued run is cancelled at once; a running one at its next batch (a flag the
    worker checks)."""
    with session_scope(ctx.engine) as session:
        run = session.get(EvalRun, eval_id)
        if run is None:
            raise NotFound(f"evaluation {eval_id} does not exist")
        if run.status.finished:
            raise EvalRefused(f"evaluation {eval_id} is {run.status.value}: there is nothing to cancel")
        session.execute(update(EvalRun).where(EvalRun.id == eval_id).values(cancel_requested=True))
        session.execute(
            update(EvalRun).where(EvalRun.id == eval_id, EvalRun.status == JobStatus.queued)
            .values(status=JobStatus.cancelled, stage="cancelled", finished_at=utcnow())
        )
    return get_eval(ctx, eval_id)


def reap(ctx: StudioContext) -> None:
    """Requeue running evaluations whose worker stopped renewing its lease; fail those out
    of attempts (as the jobs' reaper does)."""
    from worker.celery_app import enqueue_eval

    requeued, _ = EVALS.reap(ctx.engine, lambda run: f"The worker running this evaluation died {run.attempts} times.",
                             stage=REQUEUED_STAGE)
    for eval_id in requeued:
        log.warning("eval %s: worker lease expired, requeued", eval_id)
        enqueue_eval(ctx.celery, eval_id)


# --- evaluating a job when it succeeds (training.evaluate_when_done) -------------------

AUTO_LOG_KEY = "auto-eval"  # the job's log line that says what became of it: at most one per job
AUTO_CREATOR = "automatic, when job {id} succeeded"
AUTO_WAIT = timedelta(minutes=10)  # for the final result's event to arrive (over the event bus, after the status)


def auto_evaluate(ctx: StudioContext) -> list[int]:
    """Start the evaluation of each recently succeeded job that asked for one (the
    reaper's loop calls this): its final result against its base, on its held-out rows.
    What became of it goes into the job's log once, keyed, so two studios or a restart
    never start it twice. Returns the evaluation runs started."""
    now = utcnow()
    with session_scope(ctx.engine) as session:
        recent = session.exec(
            select(Job.id, Job.config_json, Job.finished_at, Job.base_model, DatasetVersion.dataset_id)
            .join(DatasetVersion, DatasetVersion.id == Job.dataset_version_id)
            .where(Job.status == JobStatus.succeeded, Job.finished_at >= now - AUTO_WAIT - timedelta(hours=1))
        ).all()
        handled = set(session.exec(
            select(JobLog.job_id).where(JobLog.key == AUTO_LOG_KEY, JobLog.job_id.in_([r[0] for r in recent]))
        ).all()) if recent else set()
        finals = set(session.exec(
            select(Checkpoint.job_id).where(Checkpoint.final, Checkpoint.job_id.in_([r[0] for r in recent]))
        ).all()) if recent else set()
    started = []
    for job_id, config_json, finished_at, base_model, dataset_id in recent:
        config = JobConfig.model_validate_json(config_json)
        if job_id in handled or not config.training.evaluate_when_done:
            continue
        finished = finished_at if finished_at.tzinfo else finished_at.replace(tzinfo=now.tzinfo)
        if job_id not in finals and now - finished < AUTO_WAIT:
            continue  # the final result's event is still on its way
        request = EvalRequest(models=[base_model, f"job-{job_id}"], dataset_id=dataset_id, split="validation",
                              sampling=EvalSampling(max_tokens=config.training.max_new_tokens))
        if not _note_once(ctx, job_id, "starting the evaluation of the final result"):
            continue  # another studio took it
        try:
            run = create_eval(ctx, request, user=AUTO_CREATOR.format(id=job_id))
        except (ConfigError, EvalRefused) as exc:
            problems = "; ".join(getattr(exc, "errors", None) or [str(exc)])
            _update_note(ctx, job_id, f"the evaluation of the final result did not start: {problems}", "warning")
            continue
        _update_note(ctx, job_id, f"evaluating the final result against the base model: evaluation run {run.id} "
                                  "(Evaluate tab)")
        started.append(run.id)
    return started


def _note_once(ctx: StudioContext, job_id: int, message: str) -> bool:
    try:
        with session_scope(ctx.engine) as session:
            session.add(JobLog(job_id=job_id, key=AUTO_LOG_KEY, message=message))
        return True
    except IntegrityError:
        return False


def _update_note(ctx: StudioContext, job_id: int, message: str, level: str = "info") -> None:
    with session_scope(ctx.engine) as session:
        session.execute(update(JobLog).where(JobLog.job_id == job_id, JobLog.key == AUTO_LOG_KEY)
                        .values(message=message, level=level))


# --- views for the Evaluate tab -------------------------------------------------------

ROW_FILTERS = ("all", "a_right_b_wrong", "b_right_a_wrong", "both_wrong", "both_right")


def _right(scores: dict[str, Any], model: str) -> Optional[bool]:
    value = (scores.get(model) or {}).get("exact_match")
    return None if value is None else value >= 1.0


def compare_rows(ctx: StudioContext, eval_id: int, a: str, b: str, which: str = "a_right_b_wrong",
                 limit: int = MAX_ROWS) -> list[EvalRowPublic]:
    """The run's rows where model `a` is right (exact match) and `b` wrong, or the other
    filters of ROW_FILTERS; rows without a reference only pass 'all'."""
    if which not in ROW_FILTERS:
        raise ConfigError([f"filter: must be one of {', '.join(ROW_FILTERS)}, not '{which}'"])
    run = get_eval(ctx, eval_id)
    for name, model in (("a", a), ("b", b)):
        if model not in run.models:
            raise ConfigError([f"{name}: '{model}' is not one of this run's models ({', '.join(run.models)})"])
    wanted = {
        "all": lambda x, y: True,
        "a_right_b_wrong": lambda x, y: x is True and y is False,
        "b_right_a_wrong": lambda x, y: x is False and y is True,
        "both_wrong": lambda x, y: x is False and y is False,
        "both_right": lambda x, y: x is True and y is True,
    }[which]
    out: list[EvalRowPublic] = []
    for offset in range(0, run.row_count, MAX_PAGE):
        for row in eval_rows(ctx, eval_id, offset, MAX_PAGE):
            if wanted(_right(row.scores, a), _right(row.scores, b)):
                out.append(row)
                if len(out) >= limit:
                    return out
    return out


def metric_by_step(ctx: StudioContext, eval_id: int, metric: str, category: Optional[str] = None
                   ) -> list[dict[str, Any]]:
    """[{job, step, model, value}] for the run's trained models, in step order per job: how
    a metric moves across a job's checkpoints (its final result at its last step)."""
    run = get_eval(ctx, eval_id)
    points = []
    with session_scope(ctx.engine) as session:
        for result in run.results:
            parsed = parse_model_id(result.model)
            if parsed.is_base:
                continue
            step = parsed.step
            if step is None:
                job = session.get(Job, parsed.job_id)
                step = job.total_steps or job.step if job is not None else None
            metrics = result.categories.get(category, {}) if category else result.metrics
            if step is not None and metrics.get(metric) is not None:
                points.append({"job": parsed.job_id, "step": step, "model": result.model, "value": metrics[metric]})
    return sorted(points, key=lambda p: (p["job"], p["step"]))
