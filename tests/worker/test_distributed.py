"""Multi-device jobs: torchrun DDP ranks (CPU processes over gloo here; GPUs when the
worker has them), rank 0 reporting, through the same task a Celery worker runs."""

from __future__ import annotations

import time

import psutil

from studio.models import JobStatus
from studio.services import jobs
from tests.conftest import upload_file, wait_until

DDP = {
    "training": {"devices": 2, "max_steps": 8, "batch_size": 4, "sample_every": 4, "save_every": 4,
                 "max_length": 64, "max_new_tokens": 4},
    "data": {"probe_count": 1, "exact_match_rows": 2},
}


def test_two_process_job_reports_once_per_step_and_saves_one_adapter(run_here, ctx):
    from peft import PeftConfig

    job = run_here(DDP)
    assert job.status == JobStatus.succeeded, job.error
    assert job.step == job.total_steps == 8
    points = jobs.job_metrics(ctx, job.id)
    assert [m.step for m in points if m.split == "train"] == list(range(1, 9))  # rank 0 only, no duplicates
    assert [m.step for m in points if m.split == "eval"] == [0, 4, 8]
    saved = jobs.job_checkpoints(ctx, job.id)
    assert sorted(c.step for c in saved if not c.final) == [4, 8] and sum(c.final for c in saved) == 1
    final = ctx.settings.artifacts_root / next(c.path for c in saved if c.final)
    assert PeftConfig.from_pretrained(final).r == 8
    logs = "\n".join(jobs.job_logs(ctx, job.id))
    assert "DDP over 2 CPU processes" in logs and "model ready" in logs


def test_a_failing_rank_fails_the_job_with_its_output(ctx, tiny_model_dir, alpaca_file, monkeypatch):
    from studio.services import datasets
    from worker import tasks

    monkeypatch.setattr(tasks, "get_settings", lambda: ctx.settings)
    job = jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(tiny_model_dir), DDP)
    datasets.snapshot_path(ctx, job.dataset_version_id).unlink()  # every rank fails reading it
    assert tasks.run_job(job.id) == "failed"
    job = jobs.get_job(ctx, job.id)
    assert "training process exited" in job.error and "ranks-attempt-1.log" in job.error
    assert "FileNotFoundError: [Errno 2] No such file or directory" in job.error


def test_cancel_stops_every_rank(ctx, tiny_model_dir, alpaca_file, start_worker, processes):
    worker = start_worker(ctx.settings)
    long = {**DDP, "training": {**DDP["training"], "max_steps": 100_000, "sample_every": 1000}}
    job = jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(tiny_model_dir), long)
    wait_until(lambda: jobs.get_job(ctx, job.id).step >= 2, 180, what="training under DDP")
    ranks = [p for p in psutil.Process(worker.pid).children(recursive=True) if "worker.distributed" in " ".join(p.cmdline())]
    assert len(ranks) >= 2
    asked = time.monotonic()
    jobs.cancel_job(ctx, job.id)
    wait_until(lambda: jobs.get_job(ctx, job.id).status == JobStatus.cancelled, 30, interval=0.05, what="cancelled")
    print(f"\nDDP cancel -> cancelled: {time.monotonic() - asked:.2f} s")
    assert time.monotonic() - asked < 5 + 1
    assert not [p for p in ranks if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_first_error_is_the_cause_in_plain_words():
    from worker.distributed import first_error

    output = (
        "noise\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
        "worker.recipe.SetupError: Could not load the tokenizer of base model 'nope'.\n"
        "Traceback (most recent call last):\n  File \"run.py\"\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
    )
    assert first_error(output) == "Could not load the tokenizer of base model 'nope'."
    assert first_error("a\nKeyError: 'x'\n").startswith("no traceback; a | KeyError")
