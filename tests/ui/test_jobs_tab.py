"""The job dashboard's views: what a job's figures and status read as."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import gradio as gr
import pytest

from studio import workers
from studio.core.estimate import GIB, Device
from studio.leases import JOBS
from studio.models import CheckpointPublic, JobPublic, JobStatus, MetricPublic, utcnow
from studio.services import datasets, jobs
from studio.db import session_scope
from studio.models import JobLog, Sample
from studio.services.context import NotFound
from studio.ui.jobs_tab import (
    dashboard_view, figures_markdown, jobs_view, markdown_html, show_controls, show_jobs, status_html,
)

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
    assert "no worker is running to take it" in dashboard_view(ctx, job.id, {})["parts"]["status"]
    workers.register(ctx.engine, "trainer@box", Device(False, "CPU", 8 * GIB, False, False), utcnow())
    assert "no worker" not in dashboard_view(ctx, job.id, {})["parts"]["status"]


def test_the_job_picker_is_not_sent_again_while_only_a_job_moves(ctx):
    # A step must refresh only the table (drawn in the browser from jobs_view): the picker
    # stays, and so does the job the dashboard shows (its change redraws the buttons, the
    # settings, the Export panel and the plot).
    dataset_id = datasets.create_dataset(ctx, "t.jsonl", b'{"instruction": "a", "output": "b"}\n' * 4)[0].id
    job = jobs.create_job(ctx, dataset_id, "demo")
    picker, key, shown = show_jobs(ctx, None, None, None)
    assert picker.value == job.id and shown == job.id
    assert show_jobs(ctx, job.id, key, job.id) == (gr.skip(), gr.skip(), gr.skip())
    table = jobs_view(ctx, "")
    assert f"<tr data-job='{job.id}'" in table["html"] and jobs_view(ctx, table["key"])["html"] is None

    assert JOBS.claim(ctx.engine, job.id, "test-owner", 60) is not None
    JOBS.update_ours(ctx.engine, job.id, "test-owner", step=5, total_steps=100)
    assert show_jobs(ctx, job.id, key, job.id) == (gr.skip(), gr.skip(), gr.skip())
    moved = jobs_view(ctx, table["key"])
    assert "5 / 100" in moved["html"] and moved["jobs"] == table["jobs"]  # no new job: the picker stays

    other = jobs.create_job(ctx, dataset_id, "demo")  # a new job: the picker lists it
    picker, key, shown = show_jobs(ctx, job.id, key, job.id)
    assert picker.value == job.id and [c[1] for c in picker.choices] == [other.id, job.id] and shown == gr.skip()
    assert jobs_view(ctx, moved["key"])["jobs"] != moved["jobs"]
    picker, key, shown = show_jobs(ctx, other.id, key, job.id)  # launched: the dashboard follows
    assert picker.value == other.id and shown == other.id


def test_the_jobs_table_escapes_names_and_says_when_there_is_none(ctx):
    assert "No jobs yet" in jobs_view(ctx, "")["html"]
    dataset_id = datasets.create_dataset(ctx, "t.jsonl", b'{"instruction": "a", "output": "b"}\n' * 4)[0].id
    jobs.create_job(ctx, dataset_id, "demo", name="<img src=x onerror=alert(1)>")
    html = jobs_view(ctx, "")["html"]
    assert "&lt;img src=x" in html and "<img" not in html


def test_the_dashboard_sends_only_the_panels_that_changed(ctx):
    """What the browser's dashboard asks every tick: a panel whose key the page holds comes
    back as None; a step, a sample or a log line brings back only its own panel."""
    dataset_id = datasets.create_dataset(ctx, "t.jsonl", b'{"instruction": "a", "output": "b"}\n' * 4)[0].id
    job = jobs.create_job(ctx, dataset_id, "demo")
    first = dashboard_view(ctx, job.id, {})
    assert set(first["parts"]) == {"status", "figures", "samples", "logs"}
    assert all(part is not None for part in first["parts"].values()) and first["may_change"]
    assert "queued" in first["parts"]["status"] and "No sample generations yet" in first["parts"]["samples"]
    assert all(part is None for part in dashboard_view(ctx, job.id, first["keys"])["parts"].values())

    assert JOBS.claim(ctx.engine, job.id, "test-owner", 60) is not None
    JOBS.update_ours(ctx.engine, job.id, "test-owner", step=5, total_steps=100)
    moved = dashboard_view(ctx, job.id, first["keys"])
    assert "step 5 / 100" in moved["parts"]["status"] and moved["moved"] != first["moved"]  # queued -> running
    assert moved["parts"]["samples"] is None and moved["parts"]["figures"] is None

    with session_scope(ctx.engine) as session:
        session.add(Sample(job_id=job.id, step=5, probe_index=0, prompt="### Instruction:\nSay <hi>\n\n### Response:",
                           output="<script>x</script>", reference="hi"))
        session.add(JobLog(job_id=job.id, key="t:1", message="evaluating"))
    fresh = dashboard_view(ctx, job.id, moved["keys"])
    assert fresh["parts"]["status"] is None and fresh["parts"]["figures"] is None and fresh["moved"] == moved["moved"]
    assert "aria-rowcount='2'" in fresh["parts"]["samples"] and "Say &lt;hi&gt;" in fresh["parts"]["samples"]
    assert "<script>" not in fresh["parts"]["samples"] and fresh["parts"]["logs"].endswith("INFO evaluating")
    with pytest.raises(NotFound):
        dashboard_view(ctx, job.id + 100, {})


def test_the_buttons_follow_the_job_and_cancel_moves_it(ctx):
    dataset_id = datasets.create_dataset(ctx, "t.jsonl", b'{"instruction": "a", "output": "b"}\n' * 4)[0].id
    job = jobs.create_job(ctx, dataset_id, "demo")
    cancel, clone, moved = show_controls(ctx, job.id, None)
    assert cancel.interactive and clone.interactive and moved is not None
    assert show_controls(ctx, job.id, moved)[2] == gr.skip()  # nothing moved: the Export panel is not redrawn
    jobs.cancel_job(ctx, job.id)
    cancel, clone, now = show_controls(ctx, job.id, moved)
    assert not cancel.interactive and now != moved
    cancel, clone, moved = show_controls(ctx, None, None)
    assert not cancel.interactive and not clone.interactive and moved == gr.skip()


def test_figures_markdown_becomes_escaped_html():
    assert markdown_html("**step 2**: loss <1>\n\nnext") == "<p><strong>step 2</strong>: loss &lt;1&gt;</p><p>next</p>"
    assert markdown_html("") == ""
