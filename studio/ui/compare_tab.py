"""Compare tab: two or more runs side by side (after H2O LLM Studio's compare view):
train and eval loss and held-out exact match on one plot, with step, epoch or trained
tokens on the x-axis; a summary row per job; the settings that differ."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio.core.timing import format_duration
from studio.services import compare, jobs
from studio.services.context import NotFound, StudioContext
from studio.ui.forms import bind
from studio.ui.text import field_label, notice, t

AXES = ("step", "epoch", "tokens")
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d")
SUMMARY_COLUMNS = ["job", "dataset", "status", "final_eval_loss", "best_exact_match", "wall_time", "tokens_per_second"]


@dataclass(frozen=True)
class CompareTab:
    picked: gr.Dropdown


# --- views ----------------------------------------------------------------------------


def comparison_figure(result: compare.Comparison, axis: str) -> go.Figure:
    """One colour per job: train loss as a line, eval loss dotted with markers, exact
    match dashed on the right axis."""
    names = {s.job_id: f"{s.job_id}: {s.name}" for s in result.jobs}
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for i, curves in enumerate(result.curves):
        colour, name = COLOURS[i % len(COLOURS)], names[curves.job_id]
        train = [p for p in curves.train if p.loss is not None and getattr(p, axis) is not None]
        evals = [p for p in curves.eval if p.loss is not None and getattr(p, axis) is not None]
        scored = [p for p in curves.eval if p.exact_match is not None and getattr(p, axis) is not None]
        group = dict(legendgroup=str(curves.job_id))
        fig.add_scatter(x=[getattr(p, axis) for p in train], y=[p.loss for p in train], mode="lines",
                        name=f"{name} · {t('jobs.trace.train_loss')}", meta=f"train-{curves.job_id}",
                        line=dict(color=colour, width=1.5), **group)
        fig.add_scatter(x=[getattr(p, axis) for p in evals], y=[p.loss for p in evals], mode="markers+lines",
                        name=f"{name} · {t('jobs.trace.eval_loss')}", meta=f"eval-{curves.job_id}",
                        line=dict(color=colour, dash="dot"), marker=dict(size=8, color=colour), **group)
        fig.add_scatter(x=[getattr(p, axis) for p in scored], y=[p.exact_match for p in scored], mode="markers+lines",
                        name=f"{name} · {t('jobs.trace.exact_match')}", meta=f"exact-{curves.job_id}",
                        line=dict(color=colour, dash="dash"), marker=dict(symbol="diamond", size=8, color=colour),
                        secondary_y=True, **group)
    fig.update_layout(
        template="plotly_white", height=460, margin=dict(l=10, r=10, t=40, b=10), hovermode="x unified",
        title=dict(text=t("compare.plot_title"), font=dict(size=14)),
        legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="center", x=0.5),
    )
    fig.update_xaxes(title_text=t(f"compare.axis.{axis}"), rangemode="tozero")
    fig.update_yaxes(title_text=t("jobs.axis.loss"), rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text=t("jobs.axis.exact_match"), range=[0, 1.02], tickformat=".0%", secondary_y=True)
    return fig


def summary_frame(result: compare.Comparison) -> pd.DataFrame:
    rows = [
        [
            f"{s.job_id}: {s.name}", s.dataset, s.status,
            "" if s.final_eval_loss is None else f"{s.final_eval_loss:.4f}",
            "" if s.best_exact_match is None else f"{s.best_exact_match:.1%}",
            "" if s.wall_seconds is None else format_duration(s.wall_seconds),
            "" if s.tokens_per_second is None else f"{s.tokens_per_second:,.0f}",
        ]
        for s in result.jobs
    ]
    return pd.DataFrame(rows, columns=[t(f"compare.col.{c}") for c in SUMMARY_COLUMNS])


def differences_frame(result: compare.Comparison) -> pd.DataFrame:
    """Only the settings that differ: one row per setting, one column per job."""
    columns = [t("compare.col.setting")] + [f"{s.job_id}: {s.name}" for s in result.jobs]
    rows = []
    for diff in result.differences:
        label = t("jobs.col.dataset_setting") if diff.field == "data.dataset" else f"{field_label(diff.field)} ({diff.field})"
        rows.append([label] + [_shown(diff.values.get(s.job_id)) for s in result.jobs])
    return pd.DataFrame(rows, columns=columns)


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "(none)"
    return "" if value is None else str(value)


# --- handlers -------------------------------------------------------------------------


def show_choices(ctx: StudioContext, picked: list[int] | None):
    """The job picker, refreshed, keeping the picks that still exist."""
    items = jobs.list_jobs(ctx)
    ids = {j.id for j in items}
    return gr.Dropdown(
        choices=[(t("jobs.choice", id=j.id, name=j.name), j.id) for j in items],
        value=[i for i in (picked or []) if i in ids],
    )


def show_comparison(ctx: StudioContext, picked: list[int] | None, axis: str):
    """Returns (message, plot, summary, differences)."""
    ids = list(dict.fromkeys(int(i) for i in (picked or [])))
    if len(ids) < 2:
        return notice("ok", t("compare.pick_two")), None, None, None
    try:
        result = compare.compare_jobs(ctx, ids[: compare.MAX_JOBS])
    except NotFound as exc:
        return notice("error", str(exc)), None, None, None
    diff = differences_frame(result)
    message = "" if len(diff) else notice("ok", t("compare.same"))
    return message, comparison_figure(result, axis if axis in AXES else "step"), summary_frame(result), diff


# --- layout ---------------------------------------------------------------------------


def build(ctx: StudioContext, page: gr.Blocks, tab: gr.Tab) -> CompareTab:
    """Render the tab inside `tab`; its job list refreshes when the tab is picked."""
    gr.Markdown(t("compare.title"))
    with gr.Row():
        picked = gr.Dropdown(multiselect=True, label=t("compare.jobs"), scale=3, elem_id="compare-jobs")
        axis = gr.Radio(
            choices=[(t(f"compare.axis.{a}"), a) for a in AXES], value="step", label=t("compare.axis"), scale=1,
            elem_id="compare-axis",
        )
    message = gr.HTML(elem_id="compare-message")
    plot = gr.Plot(show_label=False, elem_id="compare-plot")
    gr.Markdown(t("compare.summary"))
    summary = gr.Dataframe(interactive=False, wrap=True, elem_id="compare-summary")
    gr.Markdown(t("compare.diff"))
    differences = gr.Dataframe(interactive=False, wrap=True, elem_id="compare-diff")

    gr.on([page.load, tab.select], bind(show_choices, ctx), picked, picked, show_progress="hidden")
    gr.on([picked.change, axis.change], bind(show_comparison, ctx), [picked, axis], [message, plot, summary, differences],
          trigger_mode="always_last", show_progress="minimal")
    return CompareTab(picked=picked)
