"""Runs side by side: the curves of two or more jobs on one x-axis (step, epoch or trained
tokens), a summary row per job and the config fields that differ."""

from __future__ import annotations

import bisect
import math
from datetime import timezone
from typing import Any, Literal, Optional

from pydantic import BaseModel
from sqlmodel import select

from studio.core.config import JobConfig, field_path_values
from studio.core.timing import TrainPoint, pace
from studio.db import session_scope
from studio.models import MetricPoint
from studio.services import jobs
from studio.services.context import StudioContext

MAX_JOBS = 12
Axis = Literal["step", "epoch", "tokens"]


class CurvePoint(BaseModel):
    step: int
    epoch: Optional[float] = None
    tokens: Optional[float] = None  # non-padding tokens trained so far (measured)
    loss: Optional[float] = None
    exact_match: Optional[float] = None


class JobSummary(BaseModel):
    job_id: int
    name: str
    status: str
    dataset: str  # "name v3", as the Datasets tab shows it
    final_eval_loss: Optional[float]
    best_exact_match: Optional[float]
    wall_seconds: Optional[float]
    tokens_per_second: Optional[float]  # median over steps, evaluation pauses left out


class JobCurves(BaseModel):
    job_id: int
    train: list[CurvePoint]
    eval: list[CurvePoint]


class ConfigDifference(BaseModel):
    field: str
    values: dict[int, Any]  # job id -> value


class Comparison(BaseModel):
    jobs: list[JobSummary]
    curves: list[JobCurves]
    differences: list[ConfigDifference]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _curves(job_id: int, rows: list[MetricPoint]) -> JobCurves:
    """Train and eval points with epoch and trained tokens filled in: tokens are the sum of
    each step's rate times its time (the worker reports tokens/s, not a running count)."""
    train_rows = [r for r in rows if r.split == "train"]
    train, tokens, before = [], 0.0, None
    for row in train_rows:
        rate = _finite(row.tokens_per_second)
        if rate and before is not None:
            tokens += rate * max(row.recorded_at - before, 0.0)
        before = row.recorded_at
        train.append(CurvePoint(step=row.step, epoch=_finite(row.epoch), tokens=round(tokens), loss=_finite(row.loss)))
    steps = [p.step for p in train]

    def at(step: int) -> CurvePoint | None:
        i = bisect.bisect_right(steps, step) - 1
        return train[i] if i >= 0 else None

    evals = []
    for row in rows:
        if row.split != "eval":
            continue
        near = at(row.step)
        evals.append(CurvePoint(
            step=row.step,
            epoch=_finite(row.epoch) if row.epoch is not None else (near.epoch if near and row.step else 0.0),
            tokens=near.tokens if near and row.step else 0.0,
            loss=_finite(row.loss),
            exact_match=_finite(row.exact_match),
        ))
    return JobCurves(job_id=job_id, train=train, eval=evals)


def compare_jobs(ctx: StudioContext, job_ids: list[int]) -> Comparison:
    """Two or more jobs side by side. Raises NotFound naming a job that does not exist."""
    picked = list(dict.fromkeys(job_ids))
    shown = [jobs.get_job(ctx, job_id) for job_id in picked]  # NotFound names the first missing one
    summaries, curves, flat = [], [], {}
    for job in shown:
        with session_scope(ctx.engine) as session:
            rows = session.exec(
                select(MetricPoint).where(MetricPoint.job_id == job.id).order_by(MetricPoint.step, MetricPoint.split)
            ).all()
        job_curves = _curves(job.id, rows)
        curves.append(job_curves)
        evals = [p for p in job_curves.eval if p.loss is not None]
        scored = [p.exact_match for p in job_curves.eval if p.exact_match is not None]
        run = pace(
            [TrainPoint(r.step, r.recorded_at, _finite(r.tokens_per_second)) for r in rows if r.split == "train"],
            [r.step for r in rows if r.split == "eval"],
        )
        wall = None
        if job.started_at and job.finished_at:
            start, end = (d if d.tzinfo else d.replace(tzinfo=timezone.utc) for d in (job.started_at, job.finished_at))
            wall = round((end - start).total_seconds(), 1)
        dataset = jobs.job_dataset(ctx, job.id)
        summaries.append(JobSummary(
            job_id=job.id, name=job.name, status=job.status.value, dataset=dataset.label,
            final_eval_loss=evals[-1].loss if evals else None,
            best_exact_match=max(scored) if scored else None,
            wall_seconds=wall,
            tokens_per_second=round(run.tokens_per_second, 1) if run.tokens_per_second else None,
        ))
        values = field_path_values(JobConfig.model_validate(job.config))
        values.pop("data.dataset_version_id", None)
        flat[job.id] = {"data.dataset": dataset.label, **values}
    differences = []
    fields = list(dict.fromkeys(f for values in flat.values() for f in values))
    for name in fields:
        seen = {job_id: values.get(name) for job_id, values in flat.items()}
        if len({repr(v) for v in seen.values()}) > 1:
            differences.append(ConfigDifference(field=name, values=seen))
    return Comparison(jobs=summaries, curves=curves, differences=differences)


def parse_ids(text: str) -> list[int]:
    """'1,2,3' -> [1, 2, 3]. Raises ValueError with a message for the user."""
    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    if not all(p.isdigit() and len(p) <= 18 for p in parts):
        raise ValueError("ids: give job ids as numbers separated by commas, for example ids=1,2,3")
    ids = list(dict.fromkeys(int(p) for p in parts))
    if len(ids) < 2:
        raise ValueError("ids: pick at least two different jobs to compare")
    if len(ids) > MAX_JOBS:
        raise ValueError(f"ids: at most {MAX_JOBS} jobs can be compared at once ({len(ids)} given)")
    return ids
