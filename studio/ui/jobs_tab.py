"""Jobs tab: the jobs table and the dashboard of one job (status, live loss plot, sample
generations, log), with Cancel and Clone.

Everything shown is read from the DB: the browser holds nothing a job depends on, so a
reload or a closed tab never touches a running job. While a job is watched the dashboard
draws itself in the browser (dashboard.js, live_plot.js) from the REST API, only what
changed, only while on screen: no Gradio event runs per tick. Gradio events run when the
job is picked and when its status or checkpoints move (the buttons, the Export panel and
the list follow), and on the jobs list's slow timer.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import gradio as gr
import pandas as pd

from studio.core.config import SECTIONS
from studio.core.timing import format_duration
from studio.models import CheckpointPublic, JobPublic, JobStatus, MetricPublic, SamplePublic
from studio.services import jobs
from studio.services.context import NotFound, StudioContext
from studio.ui import dashboard_js, export_panel, live_plot, location
from studio.ui.forms import bind
from studio.ui.text import STATUS_COLOURS, field_label, notice, section_title, t

TAB_ID = "jobs"
# Each Gradio event costs the browser far more than its payload: at every loading-status
# change Gradio looks up, for each component that was ever an event's output, its node in
# the page's whole tree (~150 ms of Chromium's main thread per event on this page, 2 cores).
# So the watched dashboard asks the REST API instead (dashboard_view), every POLL_SECONDS.
POLL_SECONDS = 5.0  # how often the tab on screen asks for what changed: the jobs table, the watched job's panels and plot
SETTLE_SECONDS = 10.0  # keep asking this long after a job ends: its last events may still land
JOB_COLUMNS = ["id", "name", "base_model", "status", "progress", "created"]
SAMPLE_COLUMNS = ["step", "prompt", "output", "reference"]
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_INSTRUCTION = re.compile(r"### Instruction:\n(.*?)\n\n### (?:Input:\n(.*?)\n\n### )?Response:", re.S)


@dataclass(frozen=True)
class JobsTab:
    """Handles: `selected` is the job shown on the dashboard (for server events), `picker`
    the dropdown that holds the same job (for browser ones: a gr.State's value stays on the
    server). Nothing on the tab polls while another tab is open."""

    selected: gr.State
    picker: gr.Dropdown
    chat: gr.Button  # opens the Chat tab with the selected job (wired by the Chat tab)


# --- views (pure: data in, what to show out) ------------------------------------------


def jobs_table_html(items: list[JobPublic]) -> str:
    """The jobs table; a click on a row picks that job (dashboard.js)."""
    head = "".join(f"<th>{html.escape(t(f'jobs.col.{c}'))}</th>" for c in JOB_COLUMNS)
    rows = "".join(
        f"<tr data-job='{j.id}' tabindex='0'>" + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (j.id, j.name, j.base_model, j.status.value, f"{j.step} / {j.total_steps or '?'}",
                      f"{j.created_at:%Y-%m-%d %H:%M}")
        ) + "</tr>"
        for j in items
    )
    if not items:
        rows = f"<tr><td colspan='{len(JOB_COLUMNS)}'>{html.escape(t('jobs.none_yet'))}</td></tr>"
    return f"<table class='jobs-table'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def jobs_view(ctx: StudioContext, have: str) -> dict:
    """The jobs table for dashboard.js: `html` is None while `have` is its key; `jobs`
    changes only when a job is added or renamed (the page then refreshes the picker)."""
    items = jobs.list_jobs(ctx)
    key = _key(tuple((j.id, j.name, j.status.value, j.step, j.total_steps) for j in items))
    return {"key": key, "html": None if have == key else jobs_table_html(items),
            "jobs": _key(tuple((j.id, j.name) for j in items))}


def status_html(job: JobPublic, workers_live: bool = True, progress: jobs.Progress | None = None) -> str:
    """A status badge, what a running job is doing (training, evaluating, saving), a
    progress bar and, for a failed job, the reason; a queued job with no live worker to
    take it says so."""
    colour = STATUS_COLOURS.get(job.status.value, "#6b7280")
    share = 100 * job.step / job.total_steps if job.total_steps else 0
    facts = [t("jobs.step", step=job.step, total=job.total_steps) if job.total_steps else t("jobs.step_unknown")]
    if job.status == JobStatus.queued and not workers_live:
        facts.append(t("jobs.no_worker"))
    facts.append(t("jobs.attempt", attempts=job.attempts, max_attempts=job.max_attempts) if job.attempts else "")
    if progress is not None and job.status == JobStatus.running:
        facts.insert(0, t(f"jobs.phase.{progress.phase}"))
    if job.eta_seconds is not None:
        facts.append(t("jobs.eta", time=format_duration(job.eta_seconds)))
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
        f"<span data-status='{job.status.value}' data-phase='{progress.phase if progress else ''}' style='background:{colour};color:white;padding:.15em .6em;"
        f"border-radius:999px;font-weight:600'>{job.status.value}</span> "
        f"<strong>{html.escape(job.name)}</strong> (job {job.id}) &middot; {html.escape(' · '.join(f for f in facts if f))}"
        f"<div style='background:#e5e7eb;border-radius:4px;height:8px;margin-top:.6em'>"
        f"<div style='width:{share:.1f}%;background:{colour};height:8px;border-radius:4px'></div></div>"
        f"{error}</div>"
    )


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
    kept = [c for c in saved if c.on_disk]
    if kept:
        shown = [
            t("jobs.fig.final") if c.final
            else t("jobs.fig.checkpoint", step=c.step) + (f" ({c.eval_loss:.3f})" if c.eval_loss is not None else "")
            for c in kept[-6:]
        ]
        lines.append(t("jobs.fig.checkpoints", items=", ".join(shown)))
    gone = [t("jobs.fig.checkpoint", step=c.step) for c in saved if not c.on_disk]
    if gone:
        lines.append(t("jobs.fig.gone", items=", ".join(gone[-6:])))
    return "\n\n".join(lines)


def settings_frame(config: dict, dataset: jobs.JobDataset) -> pd.DataFrame:
    """The job's frozen config as rows of (section, setting, value), the dataset named as
    the Datasets tab names it (name and version number) instead of a version row id."""
    rows = []
    for section in SECTIONS:
        for name, value in (config.get(section) or {}).items():
            path = f"{section}.{name}"
            if path == "data.dataset_version_id":
                rows.append([section_title(section), t("jobs.col.dataset_setting"), dataset.label])
                continue
            if isinstance(value, (list, tuple)):
                value = ", ".join(str(v) for v in value) or "(none)"
            elif isinstance(value, str) and len(value) > 200:
                value = value[:200] + "..."
            rows.append([section_title(section), field_label(path), "" if value is None else str(value)])
    return pd.DataFrame(rows, columns=[t("jobs.col.section"), t("jobs.col.setting"), t("jobs.col.value")])


def short_prompt(prompt: str) -> str:
    """The instruction (and input) of an Alpaca prompt, without the template's boilerplate."""
    found = _INSTRUCTION.search(prompt)
    if not found:
        return prompt.strip()[-300:]
    instruction, context = found.group(1).strip(), (found.group(2) or "").strip()
    return f"{instruction}\n{context}" if context else instruction


def samples_html(samples: list[SamplePublic]) -> str:
    """A table of the sample generations, newest step first, probes in order."""
    ordered = sorted(samples, key=lambda s: (-s.step, s.probe_index))
    if not ordered:
        return f"<p class='job-samples-empty'>{html.escape(t('jobs.samples_none'))}</p>"
    head = "".join(f"<th>{html.escape(t(f'jobs.col.{c}'))}</th>" for c in SAMPLE_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (s.step, short_prompt(s.prompt), s.output, s.reference or ""))
        + "</tr>"
        for s in ordered
    )
    # aria-rowcount: what a screen reader (and the browser tests) read as the row count
    return (f"<table class='job-samples-table' aria-rowcount='{len(ordered) + 1}'>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def markdown_html(text: str) -> str:
    """The figures' markdown (paragraphs and **bold**, nothing else) as escaped HTML."""
    paragraphs = (_BOLD.sub(r"<strong>\1</strong>", html.escape(p)) for p in text.split("\n\n") if p)
    return "".join(f"<p>{p}</p>" for p in paragraphs)


def _key(value) -> str:
    return hashlib.blake2b(repr(value).encode(), digest_size=8).hexdigest()


def _job_with_status(ctx: StudioContext, job_id: int) -> tuple[JobPublic, str]:
    """The job and its status HTML (raises NotFound)."""
    job, progress = jobs.job_with_progress(ctx, job_id)  # one read: the phase matches the status
    live = job.status != JobStatus.queued or any(w.alive for w in jobs.list_workers(ctx))
    return job, status_html(job, live, progress)


def moved_key(job: JobPublic, saved: list[CheckpointPublic]) -> tuple:
    """Changes only when the job's status, its cancel flag or its checkpoints do: what the
    buttons, the Export panel and the jobs list follow."""
    return job.id, job.status.value, job.cancel_requested, tuple((c.step, c.on_disk) for c in saved)


def dashboard_view(ctx: StudioContext, job_id: int, have: dict[str, str]) -> dict:
    """What the browser's dashboard (dashboard.js) shows of a job. `parts` holds each
    panel's HTML (the log's text), or None where `have` already holds that panel's key;
    `keys` the panels' keys; `moved` a key of moved_key; `may_change` whether to keep
    asking. Raises NotFound."""
    job, status = _job_with_status(ctx, job_id)
    saved = jobs.job_checkpoints(ctx, job_id)
    points = jobs.latest_metrics(ctx, job_id)
    samples = jobs.job_samples(ctx, job_id)
    lines = jobs.job_logs(ctx, job_id)
    sources = {
        "status": (status, lambda: status),
        "figures": ((tuple((p.split, p.step) for p in points), tuple((c.step, c.on_disk) for c in saved)),
                    lambda: markdown_html(figures_markdown(points, saved))),
        "samples": ((len(samples), samples[-1].step if samples else None), lambda: samples_html(samples)),
        "logs": ((len(lines), lines[-1] if lines else ""), lambda: "\n".join(lines)),
    }
    keys = {name: _key(basis) for name, (basis, _) in sources.items()}
    return {
        "job_id": job.id,
        "parts": {name: None if have.get(name) == keys[name] else render() for name, (_, render) in sources.items()},
        "keys": keys,
        "moved": _key(moved_key(job, saved)),
        "may_change": may_change(job),
    }


# --- handlers -------------------------------------------------------------------------


def open_from_url(ctx: StudioContext, shown: tuple | None, request: gr.Request):
    """At page load: the picker with the job named in the URL (?job=3) selected.
    Returns (picker, shown key, job shown)."""
    return show_jobs(ctx, location.wanted_id(request, "job"), shown, None)


def show_jobs(ctx: StudioContext, selected: int | None, shown: tuple | None, job_shown: int | None = None):
    """The job picker, selecting `selected` (else the newest job), and the job the
    dashboard shows when that changed. Returns (picker, shown key, job); skips each while
    it has not changed. The dashboard follows `job` (a gr.State), not the picker's change
    event: Gradio's dropdown fires that again on replies of other events, a loop (issue 10).
    (The jobs table is drawn in the browser: jobs_view.)"""
    items = jobs.list_jobs(ctx)
    ids = [j.id for j in items]
    value = selected if selected in ids else (ids[0] if ids else None)
    job = gr.skip() if value == job_shown else value
    key = (value, tuple((j.id, j.name) for j in items))
    if key == shown:
        return gr.skip(), gr.skip(), job
    choices = [(t("jobs.choice", id=j.id, name=j.name), j.id) for j in items]
    return gr.Dropdown(choices=choices, value=value), key, job


def may_change(job: JobPublic) -> bool:
    """Whether the dashboard should keep polling: until a while after the job ended."""
    if not job.status.finished or job.finished_at is None:
        return True
    finished = job.finished_at if job.finished_at.tzinfo else job.finished_at.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - finished).total_seconds() < SETTLE_SECONDS


def show_controls(ctx: StudioContext, job_id: int | None, moved: tuple | None):
    """Cancel only while the job can still be stopped, Clone for any job, and `moved`
    (skipped while the same): when the job is picked, and when the browser's dashboard saw
    it move. Returns (cancel button, clone button, moved)."""
    try:
        job = jobs.get_job(ctx, job_id) if job_id is not None else None
        saved = jobs.job_checkpoints(ctx, job_id) if job is not None else []
    except NotFound:
        job, saved = None, []
    if job is None:
        now = None
        buttons = gr.Button(interactive=False), gr.Button(interactive=False)
    else:
        now = moved_key(job, saved)
        buttons = gr.Button(interactive=not job.status.finished and not job.cancel_requested), gr.Button(interactive=True)
    return *buttons, gr.skip() if now == moved else now


def show_config(ctx: StudioContext, job_id: int | None):
    """The job's settings as a table by section, and as JSON to copy.
    Returns (table, json text)."""
    try:
        job = jobs.get_job(ctx, job_id) if job_id is not None else None
    except NotFound:
        job = None
    if job is None:
        return settings_frame({}, jobs.JobDataset(None, "", None)), ""
    return settings_frame(job.config, jobs.job_dataset(ctx, job.id)), json.dumps(job.config, indent=2)


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


def pick_row(job_id: float | None):
    """A row of the jobs table was clicked (dashboard.js hands over its job id): the
    picker and the dashboard show that job. Returns (picker, job shown)."""
    if job_id is None:
        return gr.skip(), gr.skip()
    return int(job_id), int(job_id)


def pick_job(job_id: int | None) -> int | None:
    """The user picked a job in the picker: the dashboard shows it."""
    return job_id


# --- layout ---------------------------------------------------------------------------


def build(ctx: StudioContext, page: gr.Blocks, launched: gr.State, tab: gr.Tab | None = None) -> JobsTab:
    """Render the tab; a change of `launched` (a job id) opens that job."""
    picker_key, cloned, moved = gr.State(None), gr.State(None), gr.State(None)
    job_shown = gr.State(None)  # the job the dashboard shows (see show_jobs)
    gr.Markdown(t("jobs.list_title"))
    dashboard_js.jobs_table()
    with gr.Row():
        selected = gr.Dropdown(label=t("jobs.select"), info=t("jobs.select_info"), scale=3, elem_id="job-select")
        with gr.Column(scale=1, min_width=180):
            cancel_btn = gr.Button(t("jobs.cancel"), variant="stop", size="md", interactive=False, elem_id="job-cancel")
            clone_btn = gr.Button(t("jobs.clone"), size="md", interactive=False, elem_id="job-clone")
            chat_btn = gr.Button(t("jobs.chat"), size="md", elem_id="job-chat")
    message = gr.HTML(elem_id="job-message")
    dashboard_js.status_panel(POLL_SECONDS)
    live_plot.build()
    smooth = gr.Checkbox(label=t("jobs.smooth"), value=False, elem_id="job-smooth")
    gr.Markdown(t("jobs.samples_title"))
    dashboard_js.detail_panel()
    # Clicked by dashboard.js: the watched job moved (status, cancel flag, checkpoints); a
    # row of the table was clicked (its id in `picked`); the list of jobs changed.
    with gr.Row(elem_classes=["studio-hidden"]):
        moved_trigger = gr.Button(elem_id=dashboard_js.MOVED_TRIGGER)
        pick_trigger = gr.Button(elem_id=dashboard_js.PICK_TRIGGER)
        jobs_trigger = gr.Button(elem_id=dashboard_js.JOBS_TRIGGER)
        picked = gr.Number(elem_id="job-picked")
    with gr.Accordion(t("jobs.config"), open=False, elem_id="job-config-section"):
        config = gr.Dataframe(interactive=False, wrap=True, max_height=480, elem_id="job-config")
        config_json = gr.Code(
            language="json", label=t("jobs.settings_json"), interactive=False, lines=6, max_lines=20,
            buttons=["copy"], elem_id="job-config-json",
        )
    export_panel.build(ctx, job_shown, moved)

    quiet = dict(show_progress="hidden", trigger_mode="always_last")
    picker_in, picker_out = [picker_key, job_shown], [selected, picker_key, job_shown]

    def open_jobs(known: tuple | None, request: gr.Request):  # gr.Request is found by annotation, not through bind
        return open_from_url(ctx, known, request)

    page.load(open_jobs, picker_key, picker_out, **quiet)
    jobs_trigger.click(bind(show_jobs, ctx), [selected, *picker_in], picker_out, **quiet)
    for chosen in (launched, cloned):  # a job launched here or cloned: shown at once
        chosen.change(bind(show_jobs, ctx), [chosen, *picker_in], picker_out, **quiet).then(
            None, None, None, js=dashboard_js.POKE_JS
        )
    pick_trigger.click(pick_row, picked, [selected, job_shown], js=dashboard_js.PICKED_JS, **quiet)
    selected.input(pick_job, selected, job_shown, show_progress="hidden")

    controls = [cancel_btn, clone_btn, moved]
    gr.on([job_shown.change, moved_trigger.click], bind(show_controls, ctx), [job_shown, moved], controls, **quiet)
    if tab is not None:
        tab.select(None, None, None, js=dashboard_js.POKE_JS)
    # A gr.State's value stays on the server: the browser reads the job from the picker,
    # which every event that sets job_shown sets too.
    job_shown.change(None, selected, None, js=dashboard_js.SHOW_JOB_JS)
    smooth.change(None, smooth, None, js=live_plot.SMOOTH_JS)
    job_shown.change(bind(show_config, ctx), job_shown, [config, config_json], show_progress="hidden")
    cancel_btn.click(bind(cancel, ctx), job_shown, message).then(
        bind(show_controls, ctx), [job_shown, moved], controls, **quiet
    ).then(None, None, None, js=dashboard_js.POKE_JS)
    clone_btn.click(bind(clone, ctx), job_shown, [message, cloned])
    return JobsTab(selected=job_shown, picker=selected, chat=chat_btn)
