"""The Jobs tab's Export panel: export the shown job's result or a checkpoint as a merged
model, an adapter zip or a GGUF file, follow the worker's progress, and download it with
the checks it passed. Downloads are links to the REST route, which streams from the
artifact store (a multi-GB model is never copied into Gradio's cache)."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from studio.models import ExportPublic, ExportStatus, JobStatus
from studio.services import exports, jobs
from studio.services.context import NotFound, StudioContext
from studio.ui.forms import bind
from studio.ui.text import STATUS_COLOURS, notice, t

POLL_SECONDS = 1.5  # while an export of the shown job is queued or running
FINAL = -1  # the source dropdown's value for the job's final result


@dataclass(frozen=True)
class ExportPanel:
    """Handles: `listing` shows the job's exports."""

    listing: gr.HTML


# --- views (pure: data in, what to show out) ------------------------------------------


def size_text(size: int | None) -> str:
    if size is None:
        return ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def checks_text(export: ExportPublic) -> str:
    """What was checked before the export was offered, in a line."""
    c = export.checks
    if export.kind == "gguf":
        parts = []
        if "greedy_agreement" in c:
            parts.append(t("export.check.gguf", share=c["greedy_agreement"], n=c.get("prompts", 0)))
        if isinstance(c.get("llama_cpp"), dict):
            parts.append(t("export.check.llama_cpp", share=c["llama_cpp"]["greedy_agreement"]))
        if c.get("metadata"):
            parts.append(t("export.check.metadata", pre=c["metadata"].get("pre_tokenizer") or "?"))
        return " · ".join(parts)
    if "max_logit_diff" not in c:
        return ""
    return t(
        "export.check.model", diff=c["max_logit_diff"], tolerance=c.get("logit_tolerance", 1e-4),
        share=c.get("greedy_agreement", 0), n=c.get("prompts", 0),
    )


def export_card(export: ExportPublic) -> str:
    """One export: status, progress, checks, files and its download links."""
    colour = STATUS_COLOURS.get(export.status.value, "#6b7280")
    what = t(f"export.kind.{export.kind}") + (f" {export.quantization}" if export.quantization else "")
    head = (
        f"<span data-export-status='{export.status.value}' style='background:{colour};color:white;"
        f"padding:.1em .55em;border-radius:999px;font-weight:600'>{export.status.value}</span> "
        f"<strong>#{export.id} {html.escape(what)}</strong> of {html.escape(export.model_id)}"
    )
    body = ""
    if not export.status.finished:
        share = 100 * export.progress
        body = (
            f"<div style='color:#4b5563'>{html.escape(export.stage)}</div>"
            f"<div style='background:#e5e7eb;border-radius:4px;height:6px;margin-top:.3em'>"
            f"<div style='width:{share:.0f}%;background:{colour};height:6px;border-radius:4px'></div></div>"
        )
    elif export.status == ExportStatus.failed:
        body = f"<pre style='white-space:pre-wrap;color:#991b1b;margin:.3em 0'>{html.escape(export.error or '')}</pre>"
    else:
        link = f"/api/exports/{export.id}/download"
        links = [f"<a href='{link}' download class='export-download'>{html.escape(t('export.download', name=export.filename))}</a>"]
        if export.kind == "gguf":
            links.append(f"<a href='{link}?file=Modelfile' download='Modelfile'>{html.escape(t('export.modelfile'))}</a>")
        files = ", ".join(
            f"{html.escape(f['name'].split('/')[-1])} ({size_text(f['bytes'])})" for f in export.checks.get("files", [])
        )
        body = (
            f"<div class='export-checks' style='margin:.3em 0'>&#10003; {html.escape(checks_text(export))}</div>"
            f"<div style='color:#4b5563;font-size:.9em'>{files}</div>"
            f"<div style='margin-top:.3em'>{' &middot; '.join(links)} &middot; {size_text(export.size_bytes)}</div>"
        )
    return (
        f"<div class='export-card' data-export-id='{export.id}' style='border:1px solid #e5e7eb;border-radius:8px;"
        f"padding:.6em .8em;margin:.4em 0'>{head}{body}</div>"
    )


def listing_html(items: list[ExportPublic]) -> str:
    return "".join(export_card(e) for e in items) if items else f"<p style='color:#6b7280'>{html.escape(t('export.none'))}</p>"


# --- handlers -------------------------------------------------------------------------


def show_sources(ctx: StudioContext, job_id: int | None, current: int | None = None, shown: tuple | None = None):
    """What can be exported from the job: its final result once it succeeded, and each
    checkpoint still on disk. The current pick stays while it is still offered, and an
    unchanged list is not sent again: a reply computed from a pick made before the user's
    newer one would put the old pick back. Returns (picker, start button, shown key)."""
    choices: list[tuple[str, int]] = []
    if job_id is not None:
        try:
            job = jobs.get_job(ctx, job_id)
            saved = jobs.job_checkpoints(ctx, job_id)
        except NotFound:
            job, saved = None, []
        if job is not None and job.status == JobStatus.succeeded:
            choices.append((t("export.final"), FINAL))
        choices += [(t("export.checkpoint", step=c.step), c.step) for c in reversed(saved) if not c.final and c.on_disk]
    key = (job_id, tuple(choices))
    if key == shown:
        return gr.skip(), gr.skip(), gr.skip()
    values = [value for _, value in choices]
    value = current if current in values else (values[0] if values else None)
    return gr.Dropdown(choices=choices, value=value), gr.Button(interactive=bool(choices)), key


def show_quantization(kind: str):
    return gr.Radio(visible=kind == "gguf")


def start_export(ctx: StudioContext, job_id: int | None, source: int | None, kind: str, quantization: str):
    """Queue the export; returns (message, a token that refreshes the listing)."""
    if job_id is None or source is None:
        return notice("error", t("export.pick_source")), gr.skip()
    step = None if source == FINAL else int(source)
    try:
        export = exports.create_export(ctx, job_id, kind, quantization if kind == "gguf" else None, step)
    except Exception as exc:  # ConfigError, NotFound, ExportRefused: all worded for the user
        return notice("error", str(exc), getattr(exc, "errors", [])), gr.skip()
    return notice("ok", t("export.queued", id=export.id)), export.id


def show_exports(ctx: StudioContext, job_id: int | None, shown: tuple | None):
    """The job's exports; the timer runs while one is unfinished. Skips when unchanged.
    Returns (listing, delete picker, shown key, timer)."""
    try:
        items = exports.list_exports(ctx, job_id) if job_id is not None else []
    except NotFound:
        items = []
    busy = any(not e.status.finished for e in items)
    key = (job_id, tuple((e.id, e.status.value, round(e.progress, 2), e.stage) for e in items))
    if key == shown:
        return gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=busy)
    finished = [(f"#{e.id} {t('export.kind.' + e.kind)}", e.id) for e in items if e.status.finished]
    return listing_html(items), gr.Dropdown(choices=finished, value=None), key, gr.Timer(active=busy)


def delete(ctx: StudioContext, export_id: int | None):
    if export_id is None:
        return notice("error", t("export.pick_delete")), gr.skip()
    try:
        exports.delete_export(ctx, int(export_id))
    except Exception as exc:  # NotFound, ExportRefused
        return notice("error", str(exc)), gr.skip()
    return notice("ok", t("export.deleted", id=export_id)), -int(export_id)


# --- layout ---------------------------------------------------------------------------


def build(ctx: StudioContext, selected: gr.State, status: gr.State) -> ExportPanel:
    """Render the panel for the job in `selected` (the job the dashboard shows); `status`
    changes when another job is picked or the job moved on: new checkpoints, or its final
    result."""
    shown, changed, sources_shown = gr.State(None), gr.State(None), gr.State(None)
    timer = gr.Timer(POLL_SECONDS, active=False)
    with gr.Accordion(t("export.title"), open=True, elem_id="export-panel"):
        gr.Markdown(t("export.help"))
        with gr.Row():
            source = gr.Dropdown(label=t("export.source"), choices=[], scale=2, elem_id="export-source")
            kind = gr.Radio(
                [(t(f"export.kind.{k}"), k) for k in ("merged", "adapter", "gguf")], value="merged",
                label=t("export.kind"), scale=3, elem_id="export-kind",
            )
            quantization = gr.Radio(
                [("F16", "f16"), ("Q8_0", "q8_0")], value="q8_0", label=t("export.quantization"),
                info=t("export.quantization_info"), visible=False, scale=2, elem_id="export-quantization",
            )
            start = gr.Button(t("export.start"), variant="primary", interactive=False, scale=1, elem_id="export-start")
        message = gr.HTML(elem_id="export-message")
        listing = gr.HTML(listing_html([]), elem_id="export-listing")
        with gr.Row():
            doomed = gr.Dropdown(label=t("export.delete_pick"), choices=[], scale=3, elem_id="export-delete-pick")
            remove = gr.Button(t("export.delete"), variant="stop", scale=1, elem_id="export-delete")

    quiet = dict(show_progress="hidden", trigger_mode="always_last")
    outputs = [listing, doomed, shown, timer]
    # `status` changes with the job picked too. Not also on selected.change: with both, each
    # reply made Gradio fire selected.change again (when it was the job picker), a loop.
    gr.on([status.change], bind(show_sources, ctx), [selected, source, sources_shown], [source, start, sources_shown], **quiet)
    gr.on([selected.change, timer.tick, changed.change], bind(show_exports, ctx), [selected, shown], outputs, **quiet)
    kind.change(show_quantization, kind, quantization, show_progress="hidden")
    start.click(bind(start_export, ctx), [selected, source, kind, quantization], [message, changed])
    remove.click(bind(delete, ctx), doomed, [message, changed])
    return ExportPanel(listing=listing)
