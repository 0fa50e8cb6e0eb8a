"""The job dashboard's views: what a job's figures and status read as."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import gradio as gr

from studio import workers
from studio.core.estimate import GIB, Device
from studio.leases import JOBS
from studio.models import CheckpointPublic, JobPublic, JobStatus, MetricPublic, utcnow
from studio.services import datasets, jobs
from studio.ui.jobs_tab import figures_markdown, show_jobs, show_status, status_html

NOW = datetime.now(timezone.utc)


def point(step: int, split: str = "train", **values) -> MetricPublic:
    base = dict(loss=None, learning_rate=None, grad_norm=None, exact_match=None, tokens_per_second=None, epoch=None)
    return MetricPublic(step=step, split=split, **{**base, **values})


def test_figures_show_the_newest_step_eval_and_checkpoints():
    points = [
        point(0, "eval", loss=2.0, perplexity=math.exp(2.0), exact_match=0.0),
        point(1, loss=2.5, learning_rate=1e-3, grad_norm=1.5, tokens_per_second=900.0),
        point(2, loss=2.25, learning_rate=2e-3, grad_norm=1.25, tokens_per_second=1234.0),
        point(2, "eval", loss=1.5, perplexity=math.exp(1.5), exact_match=0.25),
    ]
    saved = [
        CheckpointPublic(step=2, path="jobs/1/checkpoints/checkpoint-2", eval_loss=1.5, final=False, created_at=NOW),
        CheckpointPublic(step=2, path="jobs/1/final", eval_loss=None, final=True, created_at=NOW),
    ]
    text = figures_markdown(points, saved)
    assert "**step 2**: loss 2.2500 · learning rate 0.002 · grad norm 1.25 · 1,234 tokens/s" in text
    assert "**eval at step 2**: loss 1.5000, perplexity 4.48 · held-out exact match 25.0%" in text
    assert "checkpoints saved (eval loss): step 2 (1.500), final adapter" in text
    assert figures_markdown([], []) == ""


def test_status_shows_eta_attempts_and_escapes_the_error():
    job = JobPublic(
        id=3, name="<b>x</b>", dataset_version_id=1, base_model="demo", config={}, status=JobStatus.running,
        attempts=2, max_attempts=3, step=40, total_steps=100, cancel_requested=False, error=None, cloned_from=None,
        created_at=NOW, started_at=NOW, finished_at=None, eta_seconds=125.4,
    )
    html = status_html(job)
    assert "step 40 / 100" in html and "attempt 2 of 3" in html and "about 2 min 05 s left" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def test_a_queued_job_says_when_no_worker_is_running(ctx):
    dataset_id = datasets.create_dataset(ctx, "t.jsonl", b'{"instruction": "a", "output": "b"}\n' * 4)[0].id
    job = jobs.create_job(ctx, dataset_id, "demo")
    assert "no worker is running to take it" in show_status(ctx, job.id)[0]
    workers.register(ctx.engine, "trainer@box", Device(False, "CPU", 8 * GIB, False, False), utcnow())
    assert "no worker" not in show_status(ctx, job.id)[0]


def test_the_job_picker_is_not_sent_again_while_only_a_job_moves(ctx):
    # Every update of the picker fires its change event (the whole dashboard, the settings
    # table, the Export panel and a full plot redraw), so a step must refresh only the table.
    dataset_id = datasets.create_dataset(ctx, "t.jsonl", b'{"instruction": "a", "output": "b"}\n' * 4)[0].id
    job = jobs.create_job(ctx, dataset_id, "demo")
    table, picker, key = show_jobs(ctx, None, None)
    assert picker.value == job.id and not isinstance(table, dict)
    assert show_jobs(ctx, job.id, key) == (gr.skip(), gr.skip(), gr.skip())

    assert JOBS.claim(ctx.engine, job.id, "test-owner", 60) is not None
    JOBS.update_ours(ctx.engine, job.id, "test-owner", step=5, total_steps=100)
    table, picker, key = show_jobs(ctx, job.id, key)
    assert "5 / 100" in table.to_string() and picker == gr.skip()

    other = jobs.create_job(ctx, dataset_id, "demo")  # a new job: the picker lists it
    table, picker, key = show_jobs(ctx, job.id, key)
    assert picker.value == job.id and [c[1] for c in picker.choices] == [other.id, job.id]
