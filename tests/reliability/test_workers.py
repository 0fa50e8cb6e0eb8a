"""The queue under worker loss, cancel (R7), parallel workers, and failures that must
read as plain reasons. Each test prints its figures (run with -s)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from studio.models import JobStatus
from studio.services import jobs
from studio.services.context import StudioContext
from tests.conftest import make_settings, upload_file, wait_finished, wait_until
from tests.reliability.test_crashes import RESUMABLE

pytestmark = pytest.mark.slow


def test_whole_worker_lost_is_requeued_by_the_reaper(tmp_path, tiny_model_dir, alpaca_file, start_server,
                                                      start_worker, processes):
    """kill -9 of the worker and its pool (a machine gone): nothing redelivers the job id
    on the embedded broker, so the studio's reaper requeues it once the lease expires."""
    settings = make_settings(tmp_path / "d", lease_seconds=3.0)
    ctx = StudioContext.from_settings(settings)
    start_server(settings)
    first = start_worker(settings)
    job = jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(tiny_model_dir), RESUMABLE)
    wait_until(lambda: any(c.step == 10 for c in jobs.job_checkpoints(ctx, job.id)), 180, what="checkpoint 10")
    os.killpg(first.pid, signal.SIGKILL)
    killed = time.monotonic()
    start_worker(settings)
    wait_until(lambda: jobs.get_job(ctx, job.id).attempts == 2, 60, what="the reaper to requeue the job")
    requeued = time.monotonic() - killed
    done = wait_finished(ctx, job.id, processes)
    print(f"\nworker lost: requeued and claimed {requeued:.1f} s after the kill (lease 3 s); final {done.status.value}")
    assert done.status == JobStatus.succeeded, done.error
    assert any("resuming from" in line for line in jobs.job_logs(ctx, job.id))


def test_two_workers_train_in_parallel(ctx, tiny_model_dir, alpaca_file, start_worker, processes):
    dataset_id = upload_file(ctx, alpaca_file)
    start_worker(ctx.settings, name="a")
    start_worker(ctx.settings, name="b")
    a = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), RESUMABLE)
    b = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), RESUMABLE)
    both = lambda: all(jobs.get_job(ctx, j.id).status == JobStatus.running for j in (a, b))  # noqa: E731
    wait_until(both, 120, interval=0.05, what="both jobs running at once")
    assert wait_finished(ctx, a.id, processes).status == wait_finished(ctx, b.id, processes).status == JobStatus.succeeded
    print(f"\ntwo workers ran jobs {a.id} and {b.id} at the same time")


def test_r7_cancel_queued_job_never_starts(ctx, tiny_model_dir, alpaca_file, start_worker, processes):
    dataset_id = upload_file(ctx, alpaca_file)
    job = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), RESUMABLE)
    assert jobs.cancel_job(ctx, job.id).status == JobStatus.cancelled
    follower = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), {"training": {"max_steps": 3}})
    start_worker(ctx.settings)
    assert wait_finished(ctx, follower.id, processes).status == JobStatus.succeeded  # the worker got past it
    cancelled = jobs.get_job(ctx, job.id)
    assert cancelled.status == JobStatus.cancelled and cancelled.attempts == 0
    assert jobs.job_metrics(ctx, job.id) == []


def test_r7_cancel_running_job_stops_within_5s_and_keeps_checkpoint(ctx, tiny_model_dir, alpaca_file,
                                                                     start_worker, processes):
    long = {**RESUMABLE, "training": {**RESUMABLE["training"], "max_steps": 100_000, "sample_every": 1000}}
    start_worker(ctx.settings)
    job = jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(tiny_model_dir), long)
    wait_until(lambda: any(c.step == 10 for c in jobs.job_checkpoints(ctx, job.id)), 180, what="checkpoint 10")
    asked = time.monotonic()
    jobs.cancel_job(ctx, job.id)
    done = wait_finished(ctx, job.id, processes, timeout=30)
    elapsed = time.monotonic() - asked
    print(f"\nR7: cancel -> cancelled in {elapsed:.2f} s at step {done.step}")
    assert done.status == JobStatus.cancelled and elapsed < 5
    kept = ctx.settings.artifacts_root / "jobs" / str(job.id) / "checkpoints"
    assert any((p / "studio_complete.json").is_file() for p in kept.iterdir())


def test_failures_become_plain_reasons_and_queue_moves(ctx, tiny_model_dir, alpaca_file, tmp_path,
                                                       start_worker, processes):
    dataset_id = upload_file(ctx, alpaca_file)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    bad = jobs.create_job(ctx, dataset_id, str(broken), {"training": {"max_steps": 3}})
    tight = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), {"training": {"max_steps": 3, "max_length": 16}})
    good = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), {"training": {"max_steps": 3}})
    start_worker(ctx.settings)
    for job in (bad, tight, good):
        wait_finished(ctx, job.id, processes)
    bad, tight, good = (jobs.get_job(ctx, j.id) for j in (bad, tight, good))
    print(f"\nreasons:\n  {bad.error}\n  {tight.error}")
    assert bad.status == JobStatus.failed and f"Could not load the tokenizer of base model '{broken}'" in bad.error
    assert tight.status == JobStatus.failed and tight.error.startswith("No training row fits in max_length=16 tokens")
    assert bad.attempts == tight.attempts == 1  # a deterministic error is not retried
    assert good.status == JobStatus.succeeded
