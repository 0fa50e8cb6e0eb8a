"""Measured training speed: what finished jobs say about how fast a worker's device trains
a base model with a method, and the pre-launch time estimate built from it.

A finished job's device is the device of the worker that ran it: its lease owner is
"host:pid" and the worker registry names workers "name@host". Jobs of workers not running now
still count, under the device "unknown", when nothing better is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlmodel import select

from studio import workers
from studio.core.config import JobConfig
from studio.core.estimate import Device
from studio.core.timing import Estimate, Schedule, TrainPoint, estimate_run, evals_after, pace
from studio.db import session_scope
from studio.models import Job, JobStatus, MetricPoint
from studio.services.context import StudioContext

RECENT_RUNS = 5  # newest finished runs of the same kind an estimate rests on
# Rough throughput when no run has finished yet: effective FLOP/s per CPU core and per GPU
# (well under peak: small batches, Python overhead). Labelled "rough" wherever shown.
CPU_CORE_FLOPS = 2e10  # the demo job measured ~1.9e10 a core (bench/demo_job.py)
GPU_FLOPS = 3e13
# ...and fixed costs that small models do not hide: loading, an evaluation, a step's overhead
ROUGH_STARTUP_SECONDS = 15.0
ROUGH_EVAL_SECONDS = 3.0
ROUGH_STEP_SECONDS = 0.01


@dataclass(frozen=True)
class RunSpeed:
    """What one finished run measured."""

    job_id: int
    device: str
    tokens_per_second: float
    eval_seconds: float | None
    startup_seconds: float | None


def device_key(device: Device | None) -> str:
    """One name per kind of device: 'CPU x 2' or 'NVIDIA H200 x 1'."""
    if device is None:
        return "unknown"
    return f"{device.name} x {device.gpus if device.cuda else device.cpus}"


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def run_speeds(ctx: StudioContext, base_model: str, method: str, limit: int = RECENT_RUNS * 4) -> list[RunSpeed]:
    """Speeds of the newest succeeded jobs that trained base_model with method."""
    live = workers.live_devices(ctx.engine, ctx.settings.worker_heartbeat_seconds)
    hosts = {name.rpartition("@")[2]: device_key(device) for name, device in live.items()}
    out = []
    with session_scope(ctx.engine) as session:
        finished = session.exec(
            select(Job)
            .where(Job.status == JobStatus.succeeded, Job.base_model == base_model)
            .order_by(Job.id.desc())
            .limit(limit)
        ).all()
        for job in finished:
            config = JobConfig.model_validate_json(job.config_json)
            if config.adapter.method != method:
                continue
            points = session.exec(
                select(MetricPoint.step, MetricPoint.recorded_at, MetricPoint.tokens_per_second, MetricPoint.split)
                .where(MetricPoint.job_id == job.id)
                .order_by(MetricPoint.step)
            ).all()
            train = [TrainPoint(p.step, p.recorded_at, p.tokens_per_second) for p in points if p.split == "train"]
            evals = [p.step for p in points if p.split == "eval"]
            run = pace(train, evals)
            if not run.tokens_per_second or not math.isfinite(run.tokens_per_second):
                continue
            started = _aware(job.started_at)
            startup = train[0].recorded_at - started.timestamp() if train and started else None
            host = (job.lease_owner or "").partition(":")[0]
            out.append(RunSpeed(job.id, hosts.get(host, "unknown"), run.tokens_per_second, run.eval_seconds,
                                startup if startup is not None and startup >= 0 else None))
    return out


def rough_rate(config: JobConfig, total_params: int, device: Device | None) -> float | None:
    """Tokens/s from parameter count and device alone: ~4 FLOPs per parameter per token
    for adapters (forward, and the backward pass through frozen weights), ~6 for full;
    at the FLOP/s the worker's calibration measured, else a typical one for its kind."""
    if not total_params:
        return None
    flops_per_token = (6 if config.adapter.method == "full" else 4) * total_params
    if device is not None and device.flops > 0:
        power = device.flops * (max(device.gpus, 1) if device.cuda else 1)
    elif device is not None and device.cuda:
        power = GPU_FLOPS * max(device.gpus, 1)
    else:
        power = CPU_CORE_FLOPS * ((device.cpus if device else 0) or 2)
    return power / flops_per_token


def launch_estimate(
    ctx: StudioContext,
    config: JobConfig,
    steps: int,
    tokens_per_row: float,
    total_params: int,
    device: Device | None,
) -> tuple[Estimate | None, float]:
    """The run-time range for a job before launch, and the tokens it will train on.

    Rests on the newest finished runs of the same base model and method on the same
    device; then on such runs on any device; then on a rough rate from the parameter count."""
    training = config.training
    row_tokens = min(tokens_per_row, training.max_length)
    rows_per_step = training.batch_size * training.grad_accum * training.devices
    if training.packing and row_tokens > 0:  # a step holds sequences of max_length tokens, close to full
        rows_per_step = training.sequences_per_step * training.grad_accum * training.devices * training.max_length / row_tokens
    tokens = steps * rows_per_step * row_tokens
    evaluates = config.data.validation_fraction > 0 or bool(config.data.probe_prompts)
    schedule = Schedule(steps, training.sample_every, training.save_every, evaluates)
    evals = evals_after(0, schedule) + 1 if evaluates else 0  # and the base model's at step 0
    speeds = run_speeds(ctx, config.model.base_model, config.adapter.method)
    wanted = device_key(device)
    same = [s for s in speeds if s.device == wanted][:RECENT_RUNS]
    chosen = same or speeds[:RECENT_RUNS]
    estimate = estimate_run(
        tokens,
        evals,
        [s.tokens_per_second for s in chosen],
        [s.eval_seconds for s in chosen if s.eval_seconds is not None],
        [s.startup_seconds for s in chosen if s.startup_seconds is not None],
        rough_rate=rough_rate(config, total_params, device),
        rough_fixed_seconds=ROUGH_STARTUP_SECONDS + evals * ROUGH_EVAL_SECONDS + steps * ROUGH_STEP_SECONDS,
    )
    if estimate is not None and chosen and not same:
        estimate = Estimate(estimate.low, estimate.high, estimate.basis, estimate.rate,
                            f"{len(chosen)} finished run(s) on another device")
    elif estimate is not None and not chosen and device is not None and device.flops > 0:
        estimate = Estimate(estimate.low, estimate.high, estimate.basis, estimate.rate, "calibrated")
    return estimate, tokens
