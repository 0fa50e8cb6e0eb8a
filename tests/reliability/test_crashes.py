"""Jobs survive worker crashes (R1, R2), redelivery runs a job once (R3), and a job that
always crashes fails with a plain reason while the queue keeps moving (R8). Each test
prints its figures (run with -s to see them)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from studio.models import JobStatus
from studio.services import jobs
from studio.services.context import StudioContext
from tests.conftest import make_settings, upload_file, wait_finished, wait_until

pytestmark = pytest.mark.slow

RESUMABLE = {
    "training": {
        "max_steps": 40, "batch_size": 8, "max_length": 128, "sample_every": 10, "save_every": 10,
        "keep_last": 2, "max_new_tokens": 4,
    },
    "adapter": {"dropout": 0.1},  # dropout draws random numbers: resume must restore the RNG
    "data": {"probe_count": 1, "exact_match_rows": 2},
}


def _owner_pid(ctx, job_id) -> int | None:
    from studio.db import session_scope
    from studio.models import Job

    with session_scope(ctx.engine) as session:
        job = session.get(Job, job_id)
        if job.status != JobStatus.running or not job.lease_owner:
            return None
        return int(job.lease_owner.rsplit(":", 1)[1])


def _train_losses(ctx, job_id) -> dict[int, float]:
    points = [m for m in jobs.job_metrics(ctx, job_id) if m.split == "train"]
    steps = [m.step for m in points]
    assert len(steps) == len(set(steps)), "duplicated metric steps"
    return {m.step: m.loss for m in points}


def _kill_after_checkpoint(ctx, job_id, checkpoint_step: int) -> tuple[float, int]:
    """SIGKILL the process training the job once checkpoint_step is saved and training
    has moved past it; returns (kill time, step at kill)."""
    def latest_step() -> int:  # metric points arrive within a fraction of a second of their step
        return max((m.step for m in jobs.job_metrics(ctx, job_id) if m.split == "train"), default=0)

    def ready():
        saved = any(c.step == checkpoint_step and not c.final for c in jobs.job_checkpoints(ctx, job_id))
        return saved and latest_step() > checkpoint_step

    wait_until(ready, 180, interval=0.05, what=f"checkpoint {checkpoint_step} and progress past it")
    step = latest_step()
    os.kill(_owner_pid(ctx, job_id), signal.SIGKILL)
    return time.time(), step


def test_r1_kill_9_resumes_with_a_continuous_loss_curve(ctx, tiny_model_dir, alpaca_file, start_worker, processes):
    dataset_id = upload_file(ctx, alpaca_file)
    start_worker(ctx.settings)
    reference = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), RESUMABLE)
    assert wait_finished(ctx, reference.id, processes).status == JobStatus.succeeded
    victim = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), RESUMABLE)
    killed_at, step_at_kill = _kill_after_checkpoint(ctx, victim.id, 10)
    done = wait_finished(ctx, victim.id, processes)
    assert done.status == JobStatus.succeeded, done.error
    assert done.attempts == 2

    logs = jobs.job_logs(ctx, victim.id)
    assert any("resuming from jobs/" in line and "checkpoint-" in line for line in logs), logs
    resumed = [m for m in jobs.job_metrics(ctx, victim.id) if m.split == "train"]
    first_new = min(
        (m for m in _records(ctx, victim.id) if m["recorded_at"] > killed_at), key=lambda m: m["recorded_at"]
    )
    want, got = _train_losses(ctx, reference.id), _train_losses(ctx, victim.id)
    assert sorted(got) == list(range(1, 41)), "missing metric steps"
    worst = max(abs(want[s] - got[s]) for s in want)
    print(
        f"\nR1: killed at step {step_at_kill}; kill -> first resumed step recorded "
        f"{first_new['recorded_at'] - killed_at:.2f}s; steps {len(resumed)}/40, 0 duplicated, "
        f"max |loss - uninterrupted| = {worst:.2e}"
    )
    assert worst < 1e-4


def _records(ctx, job_id) -> list[dict]:
    from sqlmodel import select

    from studio.db import session_scope
    from studio.models import MetricPoint

    with session_scope(ctx.engine) as session:
        rows = session.exec(select(MetricPoint).where(MetricPoint.job_id == job_id)).all()
        return [r.model_dump() for r in rows]


def test_r2_half_written_checkpoint_is_never_resumed(ctx, tiny_model_dir, alpaca_file, start_worker, processes):
    """A crash while the next checkpoint is being written leaves a folder without the
    completion marker; the resume must use the newest complete one."""
    dataset_id = upload_file(ctx, alpaca_file)
    start_worker(ctx.settings)
    job = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), RESUMABLE)
    # Stop the worker from training on, as a kill -9 mid-write does, right after step 10.
    _kill_after_checkpoint(ctx, job.id, 10)
    # Leave what a crash mid-write of the next checkpoint would: weights half there, no marker.
    from worker.checkpoints import last_complete

    folder = ctx.settings.artifacts_root / "jobs" / str(job.id) / "checkpoints"
    complete = last_complete(folder)
    partial = folder / f"checkpoint-{int(complete.name.split('-')[1]) + 10}"
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "adapter_model.safetensors").write_bytes(b"\x00" * 100)
    (partial / "trainer_state.json").write_text('{"global_step": 20')
    done = wait_finished(ctx, job.id, processes)
    assert done.status == JobStatus.succeeded, done.error
    logs = "\n".join(jobs.job_logs(ctx, job.id))
    assert f"resuming from jobs/{job.id}/checkpoints/{complete.name}" in logs
    assert sorted(_train_losses(ctx, job.id)) == list(range(1, 41))
    print(f"\nR2: resumed from {complete.name}; the half-written {partial.name} was discarded")


def _limit_from_speed(ctx, job_id: int, total_steps: int, processes) -> float:
    """Seconds to allow a job to finish, from its own measured speed: the time of 20
    training steps once it runs, scaled to the steps left, tripled (evaluations, saves
    and a loaded machine), and never under 240 s. A busy 2-core machine gets longer, a
    fast one is not held up."""
    def latest_step() -> int:
        return max((m.step for m in jobs.job_metrics(ctx, job_id) if m.split == "train"), default=0)

    try:
        wait_until(lambda: latest_step() >= 5, 600, interval=0.1, what=f"job {job_id} to train 5 steps")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{processes.logs()}") from None
    first, started = latest_step(), time.monotonic()
    wait_until(lambda: latest_step() >= min(first + 20, total_steps), 600, interval=0.1, what="20 more steps")
    seconds_per_step = (time.monotonic() - started) / max(1, latest_step() - first)
    limit = max(240.0, 3 * seconds_per_step * (total_steps - latest_step()) + 60)
    print(f"\nR3: {seconds_per_step:.3f} s per step here; the job gets {limit:.0f} s to finish")
    return limit


def test_r3_redelivered_task_runs_the_job_once(tmp_path, redis_url, tiny_model_dir, alpaca_file, start_worker, processes):
    settings = make_settings(tmp_path / "d", broker_url=redis_url, visibility_timeout_seconds=2)
    ctx = StudioContext.from_settings(settings)
    env_settings = settings
    start_worker(env_settings, name="a")
    start_worker(env_settings, name="b")
    # Long enough to outlast the 2 s visibility timeout several times on a fast machine;
    # the time limit comes from the job's measured speed, so a slow machine passes too.
    long = {**RESUMABLE, "training": {**RESUMABLE["training"], "max_steps": 400, "sample_every": 100}}
    job = jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(tiny_model_dir), long)
    done = wait_finished(ctx, job.id, processes, timeout=_limit_from_speed(ctx, job.id, 400, processes))
    assert done.status == JobStatus.succeeded, done.error
    starts = [line for line in jobs.job_logs(ctx, job.id) if "started on" in line]
    worker_logs = "".join(p.read_text() for p in processes.log_dir.glob("*.log"))
    deliveries = worker_logs.count("Task studio.run_job[")  - worker_logs.count("] succeeded in")
    skipped = worker_logs.count("'skipped'")
    print(f"\nR3: visibility timeout 2 s: the job id was delivered {deliveries} times "
          f"({skipped} redeliveries refused by the DB claim); the job ran {done.attempts} time(s)")
    assert deliveries >= 2, "the test did not provoke a redelivery"
    assert done.attempts == 1 and len(starts) == 1
    assert sorted(_train_losses(ctx, job.id)) == list(range(1, 401))


def test_r8_always_crashing_job_fails_and_queue_moves(ctx, tiny_model_dir, alpaca_file, start_worker, processes):
    dataset_id = upload_file(ctx, alpaca_file)
    crasher = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), RESUMABLE)
    follower = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), {"training": {"max_steps": 3}})
    start_worker(ctx.settings)
    kills = 0
    started = time.monotonic()
    while not jobs.get_job(ctx, crasher.id).status.finished and time.monotonic() - started < 240:
        pid = _owner_pid(ctx, crasher.id)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
                wait_until(lambda: _owner_pid(ctx, crasher.id) != pid, 60, what="the killed attempt to be noticed")
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    failed = jobs.get_job(ctx, crasher.id)
    print(f"\nR8: {kills} kills -> status {failed.status.value}: {failed.error}")
    assert failed.status == JobStatus.failed
    assert failed.attempts == ctx.settings.max_attempts == kills
    assert "died or stopped responding 3 times" in failed.error
    assert wait_finished(ctx, follower.id, processes).status == JobStatus.succeeded
