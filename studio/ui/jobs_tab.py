"""Jobs tab: the jobs table and the dashboard of one job (status, live loss plot, sample
generations, log), with Cancel and Clone.

Everything shown is read from the DB through the jobs service, on a timer: the browser
holds nothing a job depends on, so a reload or a closed tab never touches a running job.
Each panel refreshes in its own handler (one service call) and sends nothing when what
it shows has not changed, so the plot keeps its zoom and the tables their scroll.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio.models import CheckpointPublic, JobPublic, JobStatus, MetricPublic, SamplePublic
from studio.services import jobs
from studio.services.context import NotFound, StudioContext
from studio.ui import export_panel
from studio.ui.forms import bind
from studio.ui.text import STATUS_COLOURS, notice, t

TAB_ID = "jobs"
POLL_SECONDS = 1.0  # how often the dashboard re-reads the DB while its job may change
LIST_POLL_SECONDS = 3.0  # how often the jobs table does (other sessions launch jobs too)
SETTLE_SECONDS = 10.0  # keep polling this long after a job ends: its last events may still land
JOB_COLUMNS = ["id", "name", "base_model", "status", "progress", "created"]
SAMPLE_COLUMNS = ["step", "prompt", "output", "reference"]
_INSTRUCTION = re.compile(r"### Instruction:\n(.*?)\n\n### (?:Input:\n(.*?)\n\n### )?Response:", re.S)


@dataclass(frozen=True)
class JobsTab:
    """Handles: `selected` is the job shown on the dashboard."""

    selected: gr.Dropdown
    chat: gr.Button  # opens the Chat tab with the selected job (wired by the Chat tab)


# --- views (pure: data in, what to show out) ------------------------------------------


def jobs_frame(items: list[JobPublic]) -> pd.DataFrame:
    rows = [
        [j.id, j.name, j.base_model, j.status.value, f"{j.step} / {j.total_steps or '?'}", f"{j.created_at:%Y-%m-%d %H:%M}"]
        for j in items
    ]
    return pd.DataFrame(rows, columns=[t(f"jobs.col.{c}") for c in JOB_COLUMNS])


def status_html(job: JobPublic, workers_live: bool = True) -> str:
    """A status badge, a progress bar and, for a failed job, the reason; a queued job
    with no live worker to take it says so."""
    colour = STATUS_COLOURS.get(job.status.value, "#6b7280")
    share = 100 * job.step / job.total_steps if job.total_steps else 0
    facts = [t("jobs.step", step=job.step, total=job.total_steps) if job.total_steps else t("jobs.step_unknown")]
    if job.status == JobStatus.queued and not workers_live:
        facts.append(t("jobs.no_worker"))
    facts.append(t("jobs.attempt", attempts=job.attempts, max_attempts=job.max_attempts) if job.attempts else "")
    if job.eta_seconds is not None:
        minutes, seconds = divmod(round(job.eta_seconds), 60)
        facts.append(t("jobs.eta", time=f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"))
    if job.cancel_requested and not job.status.finished:
        facts.append(t("jobs.cancel_pending"))
    error = ""
    if job.error:
        error = (
            f"<div style='margin-top:.6em;color:#991b1b'><strong>{html.escape(t('jobs.error'))}</strong>"
            f"<pre style='white-space:pre-wrap;margin:.3em 0 0'>{html.escape(job.error)}</pre></div>"
        )
    return (
        f"<div style='padding:.4em 0'>"
        f"<span data-status='{job.status.value}' style='background:{colour};color:white;padding:.15em .6em;"
        f"border-radius:999px;font-weight:600'>{job.status.value}</span> "
        f"<strong>{html.escape(job.name)}</strong> (job {job.id}) &middot; {html.escape(' · '.join(f for f in facts if f))}"
        f"<div style='background:#e5e7eb;border-radius:4px;height:8px;margin-top:.6em'>"
        f"<div style='width:{share:.1f}%;background:{colour};height:8px;border-radius:4px'></div></div>"
        f"{error}</div>"
    )


def loss_figure(points: list[MetricPublic]) -> go.Figure:
    """Train loss by step, eval loss points, and held-out exact match on a second axis."""
    train = [p for p in points if p.split == "train" and p.loss is not None]
    evals = [p for p in points if p.split == "eval"]
    scored = [p for p in evals if p.exact_match is not None]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(
        x=[p.step for p in train], y=[p.loss for p in train], mode="lines", name=t("jobs.trace.train_loss"),
        meta="train-loss", line=dict(color="#2563eb"),
    )
    fig.add_scatter(
        x=[p.step for p in evals if p.loss is not None], y=[p.loss for p in evals if p.loss is not None],
        mode="markers+lines", name=t("jobs.trace.eval_loss"), meta="eval-loss",
        marker=dict(size=9, color="#f97316"), line=dict(dash="dot", color="#f97316"),
    )
    fig.add_scatter(
        x=[p.step for p in scored], y=[p.exact_match for p in scored], mode="markers+lines",
        name=t("jobs.trace.exact_match"), meta="exact-match", secondary_y=True,
        marker=dict(symbol="diamond", size=9, color="#16a34a"), line=dict(color="#16a34a"),
    )
    fig.update_layout(
        template="plotly_white", height=380, margin=dict(l=10, r=10, t=40, b=10), hovermode="x unified",
        title=dict(text=t("jobs.plot_title"), font=dict(size=14)),
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="center", x=0.5),
    )
    fig.update_xaxes(title_text=t("jobs.axis.step"), rangemode="tozero")
    fig.update_yaxes(title_text=t("jobs.axis.loss"), rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text=t("jobs.axis.exact_match"), range=[0, 1.02], tickformat=".0%", secondary_y=True)
    if not points:
        fig.add_annotation(text=t("jobs.plot_empty"), showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def figures_markdown(points: list[MetricPublic], saved: list[CheckpointPublic]) -> str:
    """The newest per-step and per-eval figures, and the checkpoints saved so far."""
    train = next((p for p in reversed(points) if p.split == "train"), None)
    evals = next((p for p in reversed(points) if p.split == "eval" and p.loss is not None), None)
    lines = []
    if train is not None:
        facts = [t("jobs.fig.loss", step=train.step, loss=train.loss)]
        if train.learning_rate is not None:
            facts.append(t("jobs.fig.lr", lr=train.learning_rate))
        if train.grad_norm is not None:
            facts.append(t("jobs.fig.grad_norm", norm=train.grad_norm))
        if train.tokens_per_second:
            facts.append(t("jobs.fig.tokens", rate=train.tokens_per_second))
        lines.append(" · ".join(facts))
    if evals is not None:
        facts = [t("jobs.fig.eval", step=evals.step, loss=evals.loss, ppl=evals.perplexity)]
        if evals.exact_match is not None:
            facts.append(t("jobs.fig.exact_match", share=evals.exact_match))
        lines.append(" · ".join(facts))
    if saved:
        shown = [
            t("jobs.fig.final") if c.final
            else t("jobs.fig.checkpoint", step=c.step) + (f" ({c.eval_loss:.3f})" if c.eval_loss is not None else "")
            for c in saved[-6:]
        ]
        lines.append(t("jobs.fig.checkpoints", items=", ".join(shown)))
    return "\n\n".join(lines)


def short_prompt(prompt: str) -> str:
    """The instruction (and input) of an Alpaca prompt, without the template's boilerplate."""
    found = _INSTRUCTION.search(prompt)
    if not found:
        return prompt.strip()[-300:]
    instruction, context = found.group(1).strip(), (found.group(2) or "").strip()
    return f"{instruction}\n{context}" if context else instruction


def samples_frame(samples: list[SamplePublic]) -> pd.DataFrame:
    """Newest step first, probes in order."""
    ordered = sorted(samples, key=lambda s: (-s.step, s.probe_index))
    rows = [[s.step, short_prompt(s.prompt), s.output, s.reference or ""] for s in ordered]
    return pd.DataFrame(rows, columns=[t(f"jobs.col.{c}") for c in SAMPLE_COLUMNS])


# --- handlers -------------------------------------------------------------------------


def show_jobs(ctx: StudioContext, selected: int | None, shown: tuple | None):
    """The jobs table and job picker, selecting `selected` (else the newest job).
    Returns (table, picker, shown key); skips both when nothing changed."""
    items = jobs.list_jobs(ctx)
    ids = [j.id for j in items]
    value = selected if selected in ids else (ids[0] if ids else None)
    key = (value, tuple((j.id, j.name, j.status.value, j.step, j.total_steps) for j in items))
    if key == shown:
        return gr.skip(), gr.skip(), gr.skip()
    choices = [(t("jobs.choice", id=j.id, name=j.name), j.id) for j in items]
    return jobs_frame(items), gr.Dropdown(choices=choices, value=value), key


def may_change(job: JobPublic) -> bool:
    """Whether the dashboard should keep polling: until a while after the job ended."""
    if not job.status.finished or job.finished_at is None:
        return True
    finished = job.finished_at if job.finished_at.tzinfo else job.finished_at.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - finished).total_seconds() < SETTLE_SECONDS


def show_status(ctx: StudioContext, job_id: int | None):
    """Status, progress and error; Cancel only while the job can still be stopped; the
    dashboard timer runs only while the job may still change.
    Returns (status, cancel button, clone button, timer)."""
    idle = gr.Button(interactive=False), gr.Button(interactive=False), gr.Timer(active=False)
    if job_id is None:
        return t("jobs.none"), *idle
    try:
        job = jobs.get_job(ctx, job_id)
    except NotFound as exc:
        return html.escape(str(exc)), *idle
    stoppable = not job.status.finished and not job.cancel_requested
    live = job.status != JobStatus.queued or any(w.alive for w in jobs.list_workers(ctx))
    return status_html(job, live), gr.Button(interactive=stoppable), gr.Button(interactive=True), gr.Timer(active=may_change(job))


def show_plot(ctx: StudioContext, job_id: int | None, shown: tuple | None):
    """The loss plot and the newest figures; skipped while nothing new arrived."""
    try:
        points = jobs.job_metrics(ctx, job_id) if job_id is not None else []
        saved = jobs.job_checkpoints(ctx, job_id) if job_id is not None else []
    except NotFound:
        points, saved = [], []
    key = (job_id, len(points), points[-1].step if points else None, len(saved))
    if key == shown:
        return gr.skip(), gr.skip(), gr.skip()
    return loss_figure(points), figures_markdown(points, saved), key


def show_samples(ctx: StudioContext, job_id: int | None, shown: tuple | None):
    samples = jobs.job_samples(ctx, job_id) if job_id is not None else []
    key = (job_id, len(samples))
    if key == shown:
        return gr.skip(), gr.skip()
    return samples_frame(samples), key


def show_logs(ctx: StudioContext, job_id: int | None, shown: str | None):
    text = "\n".join(jobs.job_logs(ctx, job_id)) if job_id is not None else ""
    return gr.skip() if text == (shown or "") else text


def show_config(ctx: StudioContext, job_id: int | None):
    """The job's frozen config, as stored."""
    try:
        return jobs.get_job(ctx, job_id).config if job_id is not None else None
    except NotFound:
        return None


def cancel(ctx: StudioContext, job_id: int | None):
    if job_id is None:
        return gr.skip()
    try:
        job = jobs.cancel_job(ctx, job_id)
    except NotFound as exc:
        return notice("error", str(exc))
    return notice("ok", t("jobs.cancelled", id=job.id))


def clone(ctx: StudioContext, job_id: int | None):
    """Queue a copy of the job; returns (message, new job id)."""
    if job_id is None:
        return gr.skip(), gr.skip()
    try:
        job = jobs.clone_job(ctx, job_id)
    except Exception as exc:  # NotFound, ConfigError (e.g. the base model folder is gone)
        return notice("error", str(exc), getattr(exc, "errors", [])), gr.skip()
    return notice("ok", t("jobs.cloned", id=job.id, source=job_id)), job.id


def pick_row(evt: gr.SelectData) -> int:
    """The id of the job whose table row was clicked."""
    return int(evt.row_value[0])


# --- layout ---------------------------------------------------------------------------


def build(ctx: StudioContext, page: gr.Blocks, launched: gr.State) -> JobsTab:
    """Render the tab; a change of `launched` (a job id) opens that job."""
    list_key, plot_key, samples_key, cloned = gr.State(None), gr.State(None), gr.State(None), gr.State(None)
    list_timer, timer = gr.Timer(LIST_POLL_SECONDS), gr.Timer(POLL_SECONDS, active=False)
    gr.Markdown(t("jobs.list_title"))
    table = gr.Dataframe(interactive=False, max_height=220, elem_id="jobs-table")
    with gr.Row():
        selected = gr.Dropdown(label=t("jobs.select"), info=t("jobs.select_info"), scale=3, elem_id="job-select")
        with gr.Column(scale=1, min_width=180):
            cancel_btn = gr.Button(t("jobs.cancel"), variant="stop", size="md", interactive=False, elem_id="job-cancel")
            clone_btn = gr.Button(t("jobs.clone"), size="md", interactive=False, elem_id="job-clone")
            chat_btn = gr.Button(t("jobs.chat"), size="md", elem_id="job-chat")
    message = gr.HTML(elem_id="job-message")
    status = gr.HTML(t("jobs.none"), elem_id="job-status")
    figures = gr.Markdown(elem_id="job-figures")
    plot = gr.Plot(show_label=False, elem_id="loss-plot")
    gr.Markdown(t("jobs.samples_title"))
    samples = gr.Dataframe(
        interactive=False, wrap=True, max_height=360, column_widths=["8%", "46%", "23%", "23%"], elem_id="job-samples"
    )
    logs = gr.Textbox(label=t("jobs.logs"), lines=8, max_lines=16, interactive=False, elem_id="job-logs")
    with gr.Accordion(t("jobs.config"), open=False):
        config = gr.JSON(show_label=False, elem_id="job-config")
    export_panel.build(ctx, selected, status)

    quiet = dict(show_progress="hidden", trigger_mode="always_last")
    list_out = [table, selected, list_key]
    # The table follows the dashboard's status at once, and other jobs on the slow timer.
    gr.on([page.load, list_timer.tick, status.change], bind(show_jobs, ctx), [selected, list_key], list_out, **quiet)
    launched.change(bind(show_jobs, ctx), [launched, list_key], list_out, **quiet)
    cloned.change(bind(show_jobs, ctx), [cloned, list_key], list_out, **quiet)
    table.select(pick_row, None, selected)

    refresh = [selected.change, timer.tick]
    gr.on(refresh, bind(show_status, ctx), selected, [status, cancel_btn, clone_btn, timer], **quiet)
    gr.on(refresh, bind(show_plot, ctx), [selected, plot_key], [plot, figures, plot_key], **quiet)
    gr.on(refresh, bind(show_samples, ctx), [selected, samples_key], [samples, samples_key], **quiet)
    gr.on(refresh, bind(show_logs, ctx), [selected, logs], logs, **quiet)
    selected.change(bind(show_config, ctx), selected, config, show_progress="hidden")
    cancel_btn.click(bind(cancel, ctx), selected, message)
    clone_btn.click(bind(clone, ctx), selected, [message, cloned])
    return JobsTab(selected=selected, chat=chat_btn)
