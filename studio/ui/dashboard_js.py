"""The Jobs tab's dashboard panels (status and figures; sample generations and log),
drawn in the browser by dashboard.js from GET /api/jobs/N/dashboard: a watched job costs
the page one small request per tick, and no Gradio event (see jobs_tab.POLL_SECONDS)."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from studio.ui.text import t

SCRIPT = (Path(__file__).parent / "dashboard.js").read_text()
# Hidden buttons dashboard.js clicks: the watched job moved; a row of the jobs table was
# clicked (PICKED_JS hands its id to the event); a job was added or renamed.
MOVED_TRIGGER = "job-moved-trigger"
PICK_TRIGGER = "job-pick-trigger"
JOBS_TRIGGER = "jobs-changed-trigger"
PICKED_JS = "() => [window.studioPicked ?? null]"
# Called by the job picker's change event, in the browser: show the job in the panels and
# the plot (also one that mounts later: tabs render when first shown), put it in the URL.
SHOW_JOB_JS = """(job) => {
    window.studioJob = job;
    if (window.studioDashboard) window.studioDashboard.show(job);
    if (window.studioLivePlot) window.studioLivePlot.show(job);
    // Not before the page opened the tab its URL names (location.READY_JS reads ?job=).
    if (!window.studioUrlReady) return [];
    const url = new URL(window.location.href);
    if (job === null || job === undefined || job === "") url.searchParams.delete("job");
    else url.searchParams.set("job", String(job));
    window.history.replaceState(null, "", url);
    return [];
}"""
# Ask at once (the tab came back on screen, a cancel was sent) instead of at the next tick.
POKE_JS = "() => { if (window.studioDashboard) window.studioDashboard.poke(); return []; }"

# contain: what changes inside a panel is laid out and painted inside it, not across the page.
CSS = """
#jobs-table-panel, #job-status-panel, #job-detail-panel, #loss-plot { contain: content; }
#jobs-table { max-height: 220px; overflow: auto; border: 1px solid var(--border-color-primary, #e5e7eb); border-radius: 6px; }
#jobs-table table { width: 100%; border-collapse: collapse; font-size: .9rem; }
#jobs-table th, #jobs-table td { text-align: left; padding: .35em .6em; border-bottom: 1px solid var(--border-color-primary, #e5e7eb); }
#jobs-table th { position: sticky; top: 0; background: var(--background-fill-secondary, #f9fafb); }
#jobs-table tr[data-job] { cursor: pointer; }
#jobs-table tr[data-job]:hover, #jobs-table tr[data-job]:focus { background: #eff6ff; outline: none; }
#jobs-table tr.picked { background: #dbeafe; }
#job-figures p { margin: .3em 0; }
#job-samples { max-height: 360px; overflow: auto; border: 1px solid var(--border-color-primary, #e5e7eb); border-radius: 6px; }
#job-samples table { width: 100%; border-collapse: collapse; font-size: .9rem; }
#job-samples th, #job-samples td { text-align: left; vertical-align: top; padding: .35em .5em; white-space: pre-wrap; border-bottom: 1px solid var(--border-color-primary, #e5e7eb); }
#job-samples th { position: sticky; top: 0; background: var(--background-fill-secondary, #f9fafb); }
#job-samples td:first-child { width: 8%; }
#job-samples td:nth-child(2) { width: 46%; }
#job-samples p { margin: .5em; color: #6b7280; }
#job-logs label { display: block; font-size: .9rem; margin: .8em 0 .3em; }
#job-logs textarea { width: 100%; font-family: var(--font-mono, monospace); font-size: .8rem; resize: vertical; }
"""


def labels() -> dict[str, str]:
    return {"none": t("jobs.none"), "gone": t("jobs.gone"), "offline": t("jobs.offline")}


def status_panel(poll_seconds: float) -> gr.HTML:
    """The status badge and the newest figures; its script runs the dashboard and the jobs
    table, asking every `poll_seconds` while the tab is on screen (the panels only while
    their job may change)."""
    return gr.HTML(
        f"<div id='job-status'>{html.escape(t('jobs.none'))}</div><div id='job-figures'></div>",
        html_template="${value}",
        js_on_load=SCRIPT,
        elem_id="job-status-panel",
        labels=labels(),
        poll_ms=int(poll_seconds * 1000),
        moved_trigger=MOVED_TRIGGER,
        pick_trigger=PICK_TRIGGER,
        jobs_trigger=JOBS_TRIGGER,
    )


def jobs_table() -> gr.HTML:
    """The jobs table (filled by the status panel's script; a click on a row picks the job)."""
    return gr.HTML("<div id='jobs-table'></div>", html_template="${value}", elem_id="jobs-table-panel")


def detail_panel() -> gr.HTML:
    """The sample generations and the log (filled by the status panel's script)."""
    return gr.HTML(
        f"<div id='job-samples'></div><div id='job-logs'><label for='job-logs-text'>{html.escape(t('jobs.logs'))}</label>"
        f"<textarea id='job-logs-text' rows='8' readonly></textarea></div>",
        html_template="${value}",
        elem_id="job-detail-panel",
    )

