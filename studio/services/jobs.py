"""Jobs: create (and enqueue), list, inspect, cancel, clone, and the reaper."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

from sqlmodel import select

from studio import lifecycle, workers
from studio.core import timing
from studio.core.basemodels import DEMO, ModelAccess, check_base_model
from studio.core.config import DEMO_PRESET, ConfigError, JobConfig, TrainingSection, build_config, deep_merge
from studio.core.estimate import GIB, Device, Plan, detect_device, device_capacity, preview_job
from studio.core.paths import resolve_inside
from studio.db import session_scope
from studio.models import (
    Checkpoint,
    CheckpointPublic,
    Dataset,
    DatasetVersion,
    Job,
    JobLog,
    JobPublic,
    JobStatus,
    MetricPoint,
    MetricPublic,
    Sample,
    SamplePublic,
    WorkerPublic,
)
from studio.services.context import NotFound, StudioContext
from studio.core.datasets import DatasetError
from studio.services import speed
from studio.services.datasets import get_dataset, quality_report
from worker.celery_app import enqueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a running job is: its phase (see studio.core.timing.phase), the seconds left
    (evaluation pauses counted once each, not folded into the step rate) and the median
    seconds per step."""

    phase: str
    eta_seconds: float | None
    step_seconds: float | None


def _progress(job: Job, session) -> Progress | None:
    if job.status != JobStatus.running:
        return None
    rows = session.exec(
        select(MetricPoint.step, MetricPoint.recorded_at, MetricPoint.tokens_per_second, MetricPoint.split)
        .where(MetricPoint.job_id == job.id)
        .order_by(MetricPoint.step)
    ).all()
    train = [timing.TrainPoint(r.step, r.recorded_at, r.tokens_per_second) for r in rows if r.split == "train"]
    evals = [r.step for r in rows if r.split == "eval"]
    saved = session.exec(select(Checkpoint.step, Checkpoint.final).where(Checkpoint.job_id == job.id)).all()
    config = json.loads(job.config_json)
    training, data = config.get("training", {}), config.get("data", {})
    schedule = timing.Schedule(
        job.total_steps, training.get("sample_every", 1), training.get("save_every", 0),
        evaluates=data.get("validation_fraction", 0) > 0 or bool(data.get("probe_prompts")),
    )
    now = time.time()
    run = timing.pace(train, evals)
    eta = timing.eta_seconds(train, evals, schedule, now) if job.total_steps > job.step else None
    last = train[-1] if train else None
    phase = timing.phase(
        last.step if last else None, now - last.recorded_at if last else 0.0, run.step_seconds, evals,
        [s.step for s in saved if not s.final], schedule, final_saved=any(s.final for s in saved),
    )
    return Progress(phase, None if eta is None else round(eta, 1), run.step_seconds)


def _public(job: Job, session) -> JobPublic:
    return _public_with_progress(job, session)[0]


def _public_with_progress(job: Job, session) -> tuple[JobPublic, Progress | None]:
    public = JobPublic(config=json.loads(job.config_json), **job.model_dump(exclude={"config_json"}))
    progress = _progress(job, session)
    if progress is not None:
        public.eta_seconds = progress.eta_seconds
    return public, progress


def _metric_public(point: MetricPoint) -> MetricPublic:
    public = MetricPublic.model_validate(point, from_attributes=True)
    # JSON has no inf or NaN (an fp16 step's grad norm is inf while the loss scaler settles)
    for name in ("loss", "learning_rate", "grad_norm", "exact_match", "tokens_per_second", "epoch"):
        value = getattr(public, name)
        if value is not None and not math.isfinite(value):
            setattr(public, name, None)
    if point.split == "eval" and public.loss is not None:
        public.perplexity = math.exp(min(public.loss, 50.0))
    return public


def make_config(
    base_model: str,
    dataset_version_id: int,
    partial: Mapping[str, Any] | None,
    preset: str | None,
    access: ModelAccess | None = None,
) -> JobConfig:
    """The frozen config for a new job. The demo base gets the demo preset unless the
    caller names another. The base model must be one `access` allows (default: this
    process's settings), and may run its own code only if an admin listed it."""
    if preset is None and base_model.strip() == DEMO:
        preset = DEMO_PRESET
    fixed = {"model": {"base_model": base_model.strip()}, "data": {"dataset_version_id": dataset_version_id}}
    config = build_config(deep_merge(partial or {}, fixed), preset=preset)
    problem = check_base_model(config.model.base_model, access, config.model.trust_remote_code)
    if problem:
        raise ConfigError([problem])
    return config


def _check_devices(ctx: StudioContext, config: JobConfig) -> None:
    """Refuse a job that asks for more devices than any live worker has (with no live
    worker it waits in the queue, as every job does)."""
    wanted = config.training.devices
    if wanted <= 1:
        return
    live = workers.live_devices(ctx.engine, ctx.settings.worker_heartbeat_seconds)
    if live and not any(device_capacity(d) >= wanted for d in live.values()):
        most = max(device_capacity(d) for d in live.values())
        raise ConfigError([
            f"training.devices: {wanted} devices asked for, but the most any running worker has is {most} "
            f"({'; '.join(f'{name}: {describe_device(d)}' for name, d in live.items())})"
        ])


def create_job(
    ctx: StudioContext,
    dataset_id: int,
    base_model: str,
    config: Mapping[str, Any] | None = None,
    preset: str | None = None,
    name: str = "",
    cloned_from: int | None = None,
) -> JobPublic:
    """Validate, store as queued, then put the job id on the queue."""
    dataset = get_dataset(ctx, dataset_id)
    frozen = make_config(base_model, dataset.version_id, config, preset, ModelAccess.from_settings(ctx.settings))
    _check_devices(ctx, frozen)
    with session_scope(ctx.engine) as session:
        job = Job(
            # cut after the fallback too: PostgreSQL enforces the column's 200 (SQLite does not)
            name=(name.strip() or f"{dataset.name} on {frozen.model.base_model}")[:200],
            dataset_version_id=dataset.version_id,
            base_model=frozen.model.base_model,
            config_json=frozen.model_dump_json(),
            config_version=frozen.version,
            max_attempts=ctx.settings.max_attempts,
            cloned_from=cloned_from,
        )
        session.add(job)
        session.flush()
        job_id = job.id
    try:
        enqueue(ctx.celery, job_id)
    except Exception as exc:  # the broker is down: say so on the job, keep it visible
        log.exception("could not enqueue job %s", job_id)
        with session_scope(ctx.engine) as session:
            job = session.get(Job, job_id)
            job.status = JobStatus.failed
            job.error = f"Could not reach the job queue ({type(exc).__name__}: {exc}). Is the broker running?"
    return get_job(ctx, job_id)


@dataclass(frozen=True)
class LaunchPreview:
    """What the Train tab shows before launch: the plan (parameters, memory, warnings for
    the device of the workers that will run it), which workers those are, and how much
    training the dataset gives."""

    plan: Plan
    train_rows: int
    steps: int
    runs_on: str
    estimate: timing.Estimate | None = None  # run time, from finished runs on the device (or rough)
    train_tokens: float = 0.0  # non-padding tokens the run trains on


def preview_launch(
    ctx: StudioContext,
    dataset_id: int,
    base_model: str,
    config: Mapping[str, Any] | None = None,
    preset: str | None = "",
) -> LaunchPreview:
    """Validate like create_job (raises ConfigError / NotFound), store nothing, and size
    the run. Steps follow the HF Trainer: ceil(rows / (batch x accumulation x devices)) per
    epoch; packed, sequences of max_length tokens take the rows' place (see _preview_steps)."""
    dataset = get_dataset(ctx, dataset_id)
    frozen = make_config(base_model, dataset.version_id, config, preset, ModelAccess.from_settings(ctx.settings))
    _check_devices(ctx, frozen)
    data, training = frozen.data, frozen.training
    if dataset.validation_rows:
        train_rows = dataset.row_count - dataset.validation_rows
    else:
        train_rows = dataset.row_count - round(dataset.row_count * data.validation_fraction)
    steps = _preview_steps(training, train_rows, None)
    plan, runs_on, device = _plan_for_workers(ctx, frozen)
    estimate, tokens = None, 0.0
    try:
        report = quality_report(ctx, dataset_id, frozen.model.base_model, frozen.template, training.max_length)
        steps = _preview_steps(training, train_rows, report["tokens"]["mean"])
        estimate, tokens = speed.launch_estimate(ctx, frozen, steps, report["tokens"]["mean"], plan.total_params, device)
    except DatasetError:  # no tokenizer for this model (the plan's warnings say why): no estimate
        pass
    return LaunchPreview(plan, train_rows, steps, runs_on, estimate, tokens)


def _preview_steps(training: TrainingSection, train_rows: int, tokens_per_row: float | None) -> int:
    """Steps as the worker's Trainer counts them. Packed, its items are sequences of at
    most max_length tokens (worker.packing's best fit, close to full), about
    rows x tokens per row / max_length of them; with no token count, rows stand in."""
    items = max(train_rows, 1)
    if training.packing and tokens_per_row is not None:
        items = math.ceil(items * min(tokens_per_row, training.max_length) / training.max_length)
    per_epoch = math.ceil(items / (training.sequences_per_step * training.grad_accum * training.devices))
    return training.max_steps or math.ceil(per_epoch * training.epochs)


def _plan_for_workers(ctx: StudioContext, config: JobConfig) -> tuple[Plan, str, Device]:
    """Plan for the most capable live worker's device; a job may land on any free worker,
    so warnings that only hold on the others are added, named by device. With no live
    worker, plan for this machine and say that a job would wait."""
    live = workers.live_devices(ctx.engine, ctx.settings.worker_heartbeat_seconds)
    if not live:
        device = detect_device()
        plan = preview_job(config, device)
        silence = ctx.settings.worker_heartbeat_seconds * workers.MISSED_BEATS
        plan.warnings.insert(0, (
            f"No worker has reported in the last {silence:.0f} s: a launched job waits in the queue until one "
            "starts (`studio worker`). This estimate is for the studio's own machine."
        ))
        return plan, "no worker yet", device
    devices = sorted(set(live.values()), key=lambda d: (d.cuda, d.memory_bytes, d.name), reverse=True)
    plan = preview_job(config, devices[0])
    for other in devices[1:]:
        plan.warnings.extend(
            f"On {describe_device(other)}: {w}" for w in preview_job(config, other).warnings if w not in plan.warnings
        )
    return plan, "; ".join(f"{name} ({describe_device(device)})" for name, device in live.items()), devices[0]


def list_workers(ctx: StudioContext) -> list[WorkerPublic]:
    return workers.list_workers(ctx.engine, ctx.settings.worker_heartbeat_seconds)


def describe_device(device: Device) -> str:
    if device.cuda:
        count = f"{device.gpus} x " if device.gpus > 1 else ""
        return f"{count}{device.name}, {device.memory_bytes / GIB:.0f} GiB"
    return f"CPU, {device.memory_bytes / GIB:.0f} GiB RAM"


def clone_job(ctx: StudioContext, job_id: int) -> JobPublic:
    """A new queued job with the same frozen config and dataset version's dataset."""
    source = get_job(ctx, job_id)
    with session_scope(ctx.engine) as session:
        dataset_id = session.get(DatasetVersion, source.dataset_version_id).dataset_id
    config = dict(source.config)
    config.pop("version", None)
    return create_job(
        ctx, dataset_id, source.base_model, config, preset="", name=f"{source.name} (clone)", cloned_from=job_id
    )


def get_job(ctx: StudioContext, job_id: int) -> JobPublic:
    return job_with_progress(ctx, job_id)[0]


def job_with_progress(ctx: StudioContext, job_id: int) -> tuple[JobPublic, Progress | None]:
    """The job and, while it runs, its phase and ETA, read together (progress reads every
    metric point of the job: once)."""
    with session_scope(ctx.engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        return _public_with_progress(job, session)


def _require_job(ctx: StudioContext, job_id: int) -> None:
    """NotFound unless the job exists (without get_job's progress, which reads every metric point)."""
    with session_scope(ctx.engine) as session:
        if session.get(Job, job_id) is None:
            raise NotFound(f"job {job_id} does not exist")


def list_jobs(ctx: StudioContext, limit: int = 200) -> list[JobPublic]:
    with session_scope(ctx.engine) as session:
        return [_public(j, session) for j in session.exec(select(Job).order_by(Job.id.desc()).limit(limit)).all()]


def cancel_job(ctx: StudioContext, job_id: int) -> JobPublic:
    get_job(ctx, job_id)
    lifecycle.request_cancel(ctx.engine, job_id)
    return get_job(ctx, job_id)


def job_metrics(ctx: StudioContext, job_id: int, after_step: int = -1) -> list[MetricPublic]:
    _require_job(ctx, job_id)
    with session_scope(ctx.engine) as session:
        points = session.exec(
            select(MetricPoint)
            .where(MetricPoint.job_id == job_id, MetricPoint.step > after_step)
            .order_by(MetricPoint.step, MetricPoint.split)
        ).all()
        return [_metric_public(p) for p in points]


def latest_metrics(ctx: StudioContext, job_id: int) -> list[MetricPublic]:
    """The newest eval point and the newest train point (in that order), for the
    dashboard's figures: two rows, however long the run."""
    _require_job(ctx, job_id)
    with session_scope(ctx.engine) as session:
        newest = [
            session.exec(
                select(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.split == split)
                .order_by(MetricPoint.step.desc()).limit(1)
            ).first()
            for split in ("eval", "train")
        ]
        return [_metric_public(p) for p in newest if p is not None]


def job_samples(ctx: StudioContext, job_id: int) -> list[SamplePublic]:
    _require_job(ctx, job_id)
    with session_scope(ctx.engine) as session:
        samples = session.exec(
            select(Sample).where(Sample.job_id == job_id).order_by(Sample.step, Sample.probe_index)
        ).all()
        return [SamplePublic.model_validate(s, from_attributes=True) for s in samples]


def job_checkpoints(ctx: StudioContext, job_id: int) -> list[CheckpointPublic]:
    """Every checkpoint the job saved, each saying whether its folder is still on disk
    ("keep last" deletes older ones; a delete by hand does too)."""
    _require_job(ctx, job_id)
    with session_scope(ctx.engine) as session:
        rows = session.exec(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)).all()
        saved = [CheckpointPublic.model_validate(c, from_attributes=True) for c in rows]
    for checkpoint in saved:
        try:
            checkpoint.on_disk = resolve_inside(ctx.settings.artifacts_root, checkpoint.path).is_dir()
        except ValueError:  # a stored path outside the artifact root is not served
            checkpoint.on_disk = False
    return saved


@dataclass(frozen=True)
class JobDataset:
    """The dataset a job trains on, as the Datasets tab names it."""

    dataset_id: int | None
    name: str
    version: int | None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.version is not None else self.name


def job_dataset(ctx: StudioContext, job_id: int) -> JobDataset:
    """Dataset name and version number (1, 2, ...) of a job, not the version's row id."""
    job = get_job(ctx, job_id)
    with session_scope(ctx.engine) as session:
        version = session.get(DatasetVersion, job.dataset_version_id)
        dataset = session.get(Dataset, version.dataset_id) if version else None
        if version is None or dataset is None:
            return JobDataset(None, f"dataset version {job.dataset_version_id} (deleted)", None)
        return JobDataset(dataset.id, dataset.name, version.number)


def job_logs(ctx: StudioContext, job_id: int, limit: int = 500) -> list[str]:
    with session_scope(ctx.engine) as session:
        rows = session.exec(select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id.desc()).limit(limit)).all()
        return [f"{r.created_at:%H:%M:%S} {r.level.upper()} {r.message}" for r in reversed(rows)]


def reap(ctx: StudioContext) -> None:
    """Requeue jobs whose worker died (lease expired) and re-send their ids."""
    requeued, failed = lifecycle.reap_expired(ctx.engine)
    for job_id in requeued:
        log.warning("job %s: worker lease expired, requeued", job_id)
        enqueue(ctx.celery, job_id)
    for job_id in failed:
        log.warning("job %s: out of attempts, failed", job_id)
