"""The quality report (with its one-click fixes) and the token preview of one row."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any, get_args

import gradio as gr
import plotly.io as pio

from studio.core.config import DEMO_PRESET, TemplateSection, TrainingSection, build_config
from studio.core.datasets import DatasetError
from studio.core.quality import FIXES
from studio.services import datasets
from studio.services.context import NotFound, StudioContext
from studio.ui.datasets.cells import inert_markdown
from studio.ui.datasets.messages import refused, saved_version
from studio.ui.forms import spec_for
from studio.ui.text import notice, t

TEMPLATES = [n for n in get_args(TemplateSection.model_fields["name"].annotation) if n != "custom"]
MAX_LENGTH = spec_for("training.max_length", TrainingSection.model_fields["max_length"])
# The report checks the data against the settings it will train with: until the Train tab
# says otherwise (follow_training), those of the preset the Train tab opens on.
TRAINING = build_config({}, preset=DEMO_PRESET)


def advice(report: dict[str, Any]) -> list[str]:
    """What matters in a report, one plain sentence per finding, the costliest first."""
    cut, leaks = report["truncated"], report["marker_leaks"]
    found = []
    if report["empty_responses"]["rows"]:
        found.append(t("datasets.q.advice.empty", rows=f"{report['empty_responses']['rows']:,}"))
    if cut["rows"]:
        found.append(t("datasets.q.advice.truncated", rows=f"{cut['rows']:,}", share=f"{cut['share']:.0%}",
                       max_length=f"{report['max_length']:,}"))
        if cut["rows_with_nothing_left"]:
            found.append(t("datasets.q.advice.lost", rows=f"{cut['rows_with_nothing_left']:,}"))
    if leaks["rows"]:
        markers = ", ".join(inert_markdown(m) for m in leaks["markers"])
        found.append(t("datasets.q.advice.markers", rows=f"{leaks['rows']:,}", markers=markers))
    if report["exact_duplicates"]["rows"]:
        found.append(t("datasets.q.advice.exact", rows=f"{report['exact_duplicates']['rows']:,}"))
    if report["near_duplicates"]["rows"]:
        found.append(t("datasets.q.advice.near", rows=f"{report['near_duplicates']['rows']:,}"))
    short = report["short_responses"]
    if short["rows"]:
        found.append(t("datasets.q.advice.short", rows=f"{short['rows']:,}", chars=short["under_chars"]))
    return found


def _examples(indices: list) -> str:
    """Example rows of a finding: '3, 9' or, for duplicate groups, '3 = 9 = 12; 5 = 7'."""
    if not indices:
        return ""
    if isinstance(indices[0], list):
        shown = "; ".join(" = ".join(str(i) for i in group[:4]) for group in indices[:5])
    else:
        shown = ", ".join(str(i) for i in indices[:10])
    return t("datasets.q.examples", rows=shown)


def report_markdown(report: dict[str, Any], name: str = "") -> str:
    """The quality report's summary as Markdown: what matters first, in words, then the
    table of checks; every string from the data is escaped."""
    tokens, cut = report["tokens"], report["truncated"]
    found = advice(report)
    lines = [
        t("datasets.q.head", name=inert_markdown(name), version=report["version"], rows=f"{report['rows']:,}",
          template=report["template"], max_length=f"{report['max_length']:,}", model=inert_markdown(report["base_model"]),
          seconds=report.get("seconds", 0)),
        "",
        t("datasets.q.matters"),
        *([f"- {sentence}" for sentence in found] or [f"- {t('datasets.q.all_clear')}"]),
        "",
        t("datasets.q.table_head"),
        "| --- | ---: | --- |",
    ]

    def line(key: str, rows: int, detail: str = "") -> None:
        lines.append(f"| {t(key)} | {rows:,} | {detail} |")

    exact, near = report["exact_duplicates"], report["near_duplicates"]
    line("datasets.q.exact", exact["rows"], t("datasets.q.groups", groups=exact["groups"]) + _examples(exact["examples"]))
    line("datasets.q.near", near["rows"], t("datasets.q.groups", groups=near["groups"]) + _examples(near["examples"]))
    line("datasets.q.empty", report["empty_responses"]["rows"], _examples(report["empty_responses"]["examples"]))
    short = report["short_responses"]
    line("datasets.q.short", short["rows"], t("datasets.q.short_detail", chars=short["under_chars"]) + _examples(short["examples"]))
    line(
        "datasets.q.truncated", cut["rows"],
        t("datasets.q.truncated_detail", share=f"{cut['share']:.1%}", mean=cut["mean_tokens_cut"], max=cut["max_tokens_cut"],
          lost=cut["rows_with_nothing_left"]) + _examples(cut["examples"]),
    )
    leaks = report["marker_leaks"]
    markers = ", ".join(f"{inert_markdown(m)} × {n}" for m, n in leaks["markers"].items())
    line("datasets.q.markers", leaks["rows"], markers + _examples(leaks["examples"]))
    lines += ["", t("datasets.q.tokens", total=f"{tokens['total']:,}", trained=f"{tokens['trained']:,}",
                    mean=tokens["mean"], median=tokens["median"], max=f"{tokens['max']:,}")]
    categories = report.get("categories")
    if categories:
        total = max(1, report["rows"])
        balance = ", ".join(f"{inert_markdown(name)} {n:,} ({n / total:.0%})" for name, n in categories["counts"].items())
        lines += ["", t("datasets.q.categories", column=inert_markdown(categories["column"]), count=len(categories["counts"]),
                        balance=balance)]
    else:
        lines += ["", t("datasets.q.no_categories")]
    if not report["fixes"]:
        lines += ["", t("datasets.q.no_fixes")]
    return "\n".join(lines)


def figure(report: dict[str, Any], name: str):
    """A report figure (plotly JSON) as a plotly Figure for gr.Plot, or None."""
    data = report["figures"].get(name)
    return pio.from_json(json.dumps(data)) if data else None


SPAN_STYLES = {  # (trained, cut) -> class and inline style
    (True, False): ("tok-trained", "background:#bbf7d0;color:#14532d"),
    (False, False): ("tok-masked", "background:#f3f4f6;color:#4b5563"),
    (True, True): ("tok-trained tok-cut", "background:#e5e7eb;color:#9ca3af;text-decoration:line-through"),
    (False, True): ("tok-masked tok-cut", "color:#9ca3af;text-decoration:line-through"),
}


def preview_html(preview: dict[str, Any]) -> str:
    """One row as the model sees it: trained spans green, masked prompt grey, cut spans
    struck through; every piece of text escaped."""
    spans = "".join(
        f"<span class='{SPAN_STYLES[(s['trained'], s['cut'])][0]}' style='{SPAN_STYLES[(s['trained'], s['cut'])][1]}' "
        f"title='{s['tokens']} tokens'>{html.escape(s['text'])}</span>"
        for s in preview["spans"]
    )
    where = t("datasets.tp.where", name=preview["name"], version=preview["version"]) if "name" in preview else ""
    counts = t(
        "datasets.tp.counts", where=where, index=preview["index"], tokens=preview["tokens"], trained=preview["trained_tokens"],
        masked=preview["masked_tokens"], cut=preview["cut_tokens"], max_length=preview["max_length"],
    )
    warnings = "".join(
        f"<div class='tok-warning' style='color:#991b1b'>{html.escape(t(key))}</div>"
        for key, on in (("datasets.tp.truncated", preview["truncated"]), ("datasets.tp.nothing", preview["nothing_to_learn"]))
        if on
    )
    legend = " ".join(
        f"<span class='{cls}' style='{style};padding:0 .3em'>{html.escape(t(key))}</span>"
        for key, (cls, style) in zip(
            ("datasets.tp.legend_trained", "datasets.tp.legend_masked", "datasets.tp.legend_cut"),
            (SPAN_STYLES[(True, False)], SPAN_STYLES[(False, False)], SPAN_STYLES[(False, True)]),
        )
    )
    return (
        f"<div class='token-preview'><div class='tok-counts'><strong>{html.escape(counts)}</strong></div>{warnings}"
        f"<div style='margin:.3em 0'>{legend}</div>"
        f"<pre style='white-space:pre-wrap;word-break:break-word;font-size:.9em;line-height:1.5'>{spans}</pre></div>"
    )


def run_report(
    ctx: StudioContext, dataset_id: int | None, base_model: str, template: str, max_length: float | None,
    progress: gr.Progress = gr.Progress(),
):
    """The quality report of the newest version. Returns (message, summary, length plot,
    category plot, report state, one visibility per fix button)."""
    nothing = (None, None, None, *[gr.Button(visible=False)] * len(FIXES))
    if dataset_id is None:
        return notice("error", t("datasets.no_dataset")), "", *nothing
    if max_length is None:
        return notice("error", t("datasets.q.refused"), [t("datasets.max_length_missing")]), "", *nothing
    try:
        name = datasets.get_dataset(ctx, dataset_id).name
        progress(0, desc=t("datasets.q.running", name=name))
        report = datasets.quality_report(ctx, dataset_id, (base_model or "").strip(), TemplateSection(name=template or "alpaca"), int(max_length))
    except (DatasetError, NotFound) as exc:
        return refused("datasets.q.refused", exc), "", *nothing
    state = {"dataset_id": dataset_id, "version_id": report["version_id"]}
    buttons = [gr.Button(visible=fix in report["fixes"]) for fix in FIXES]
    return "", report_markdown(report, name), figure(report, "lengths"), figure(report, "categories"), state, *buttons


def clear_report():
    """Another dataset was picked: no report, fix or token preview of the last one stays.
    Returns (message, summary, length plot, category plot, report state, fix buttons...,
    preview, preview row #)."""
    return "", "", None, None, None, *[gr.Button(visible=False)] * len(FIXES), "", 0


def apply_quality_fix(ctx: StudioContext, fix: str, report: dict | None):
    """One of the report's fixes, on the version the report is of. Returns (message, changed)."""
    if not report:
        return notice("error", t("datasets.q.run_first")), gr.skip()
    try:
        saved = datasets.apply_fix(ctx, report["dataset_id"], fix, report["version_id"])
    except (DatasetError, NotFound) as exc:
        return refused("datasets.change_refused", exc), gr.skip()
    return saved_version(saved, report["version_id"])


def preview(ctx: StudioContext, dataset_id: int | None, index: float | None, base_model: str, template: str, max_length: float | None) -> str:
    """One row of the newest version as the model sees it, as HTML."""
    if dataset_id is None or index is None or index < 0 or max_length is None:
        return notice("error", t("datasets.tp.pick"))
    try:
        dataset = datasets.get_dataset(ctx, dataset_id)
        row = datasets.preview_row(ctx, dataset_id, int(index), (base_model or "").strip(), TemplateSection(name=template or "alpaca"), int(max_length))
    except (DatasetError, NotFound) as exc:
        return refused("datasets.tp.refused", exc)
    return preview_html({**row, "name": dataset.name, "version": dataset.version})



def copy_setting(value: Any) -> Any:
    """A Train tab setting, copied into the report's matching box (follow_training)."""
    return value


def copy_template(name: str | None):
    """The Train tab's template, copied into the report's template choice, unless it is
    one the report cannot offer ('custom': its text lives in the Train tab)."""
    return name if name in TEMPLATES else gr.skip()


@dataclass(frozen=True)
class QualityPanel:
    base_model: gr.Textbox
    template: gr.Dropdown
    max_length: gr.Number
    run: gr.Button
    message: gr.HTML
    summary: gr.Markdown
    lengths: gr.Plot
    categories: gr.Plot
    fixes: list[gr.Button]  # one per FIXES entry, shown when the report offers it
    report: gr.State
    preview_index: gr.Number
    preview: gr.Button
    preview_html: gr.HTML


def quality_panel() -> QualityPanel:
    with gr.Row():
        base_model = gr.Textbox(value="demo", label=t("datasets.q.model"), info=t("datasets.q.model_info"), max_length=500,
                                elem_id="quality-model")
        template = gr.Dropdown(choices=TEMPLATES, value=TRAINING.template.name, label=t("datasets.q.template"),
                               elem_id="quality-template")
        max_length = gr.Number(value=TRAINING.training.max_length, minimum=MAX_LENGTH.minimum, maximum=MAX_LENGTH.maximum,
                               precision=0, label=t("datasets.q.max_length"), info=t("datasets.q.max_length_info"),
                               elem_id="quality-max-length")
    run = gr.Button(t("datasets.q.run"), variant="primary", elem_id="quality-run")
    message = gr.HTML(elem_id="quality-message")
    summary = gr.Markdown(elem_id="quality-summary")
    with gr.Row():
        fixes = [gr.Button(t(f"datasets.fix.{fix}"), visible=False, elem_id=f"fix-{fix}") for fix in FIXES]
    with gr.Row():
        lengths = gr.Plot(label=t("datasets.q.lengths"), elem_id="quality-lengths")
        categories = gr.Plot(label=t("datasets.q.categories_plot"), elem_id="quality-categories")
    gr.Markdown(t("datasets.tp.title"))
    with gr.Row(equal_height=True):
        preview_index = gr.Number(label=t("datasets.row_index"), precision=0, minimum=0, value=0, elem_id="token-index")
        preview_btn = gr.Button(t("datasets.tp.show"), elem_id="token-preview-btn")
    preview_out = gr.HTML(elem_id="token-preview")
    return QualityPanel(base_model, template, max_length, run, message, summary, lengths, categories, fixes,
                        gr.State(None), preview_index, preview_btn, preview_out)
