"""Evaluate tab: pick models (the base, checkpoints, results) and an evaluation set, start
an evaluation run, watch its progress, then read a table of models by metrics, a bar
chart, a metric across a job's checkpoints, and the rows where one model is right and
the other wrong.

Handlers call studio.services.evals; the run itself happens on a worker. The selected
run's id is the only thing a browser session keeps (a dropdown's value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from pydantic import ValidationError

from studio.core.config import ConfigError
from studio.core.eval_metrics import LOWER_IS_BETTER, METRICS
from studio.models import EvalPublic
from studio.services import chat, datasets, evals
from studio.services.context import NotFound, StudioContext
from studio.services.evals import EvalRequest, EvalSampling
from studio.ui.forms import bind
from studio.ui.text import TEXT, notice, t

TAB_ID = "evaluate"
POLL_SECONDS = 2.0
ROW_VIEW_LIMIT = 200  # rows the row view shows at once

# This tab's strings, kept with the others in studio.ui.text's table (one place per language).
TEXT.update({
    "tab.evaluate": "Evaluate",
    "eval.title": (
        "### Evaluate checkpoints\nEvery model you pick answers the same rows; each answer is scored against the "
        "row's reference (perplexity, exact match, ROUGE, BLEU, chrF, length), overall and per category."
    ),
    "eval.models": "Models",
    "eval.models_info": "The base, checkpoints and final results (up to 8).",
    "eval.reload": "Reload",
    "eval.dataset": "Evaluation set",
    "eval.dataset_info": "A dataset: its validation rows (held out from training) or all of it.",
    "eval.split": "Rows",
    "eval.split_validation": "Validation rows",
    "eval.split_all": "All rows",
    "eval.max_rows": "At most this many rows",
    "eval.max_tokens": "Most new tokens per answer",
    "eval.prompts": "Or type prompts, one per line (no references: only answers and lengths)",
    "eval.start": "Start evaluation",
    "eval.started": "Evaluation {id} queued: {rows} rows, {models} models.",
    "eval.refused": "The evaluation cannot start",
    "eval.pick_models": "Pick at least one model.",
    "eval.runs": "Evaluation runs",
    "eval.no_runs": "No evaluation run yet.",
    "eval.run_label": "#{id} · {models} · {rows} rows · {when}",
    "eval.status": "**Evaluation {id}**: {status} · {progress}% · {stage}",
    "eval.failed": "**Evaluation {id} failed**: {error}",
    "eval.cancel": "Cancel run",
    "eval.category": "Category",
    "eval.all_categories": "All rows",
    "eval.metric": "Metric",
    "eval.chart_title": "{metric} by model",
    "eval.steps_title": "{metric} across the checkpoints of job {job}",
    "eval.step": "step",
    "eval.lower_better": " (lower is better)",
    "eval.rows_title": "#### Row by row",
    "eval.model_a": "Model A",
    "eval.model_b": "Model B",
    "eval.filter": "Show",
    "eval.filter_all": "All rows",
    "eval.filter_a_right_b_wrong": "A right, B wrong",
    "eval.filter_b_right_a_wrong": "B right, A wrong",
    "eval.filter_both_wrong": "Both wrong",
    "eval.filter_both_right": "Both right",
    "eval.rows_count": "{shown} of {total} rows (right = exact match with the reference).",
    "eval.col_model": "model",
    "eval.col_row": "#",
    "eval.col_prompt": "prompt",
    "eval.col_reference": "reference",
    "eval.col_category": "category",
})


@dataclass(frozen=True)
class EvaluateTab:
    runs: gr.Dropdown


# --- views ----------------------------------------------------------------------------


def model_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    return [(entry.label, entry.id) for entry in chat.list_models(ctx)]


def dataset_choices(ctx: StudioContext) -> list[tuple[str, int]]:
    return [(f"{d.name} (#{d.id}, {d.row_count} rows)", d.id) for d in datasets.list_datasets(ctx)]


def run_choices(ctx: StudioContext) -> list[tuple[str, int]]:
    # no status in the label: the status line below follows it, a label would go stale
    return [(t("eval.run_label", id=r.id, models=", ".join(r.models)[:80], rows=r.row_count,
               when=f"{r.created_at:%Y-%m-%d %H:%M}"), r.id) for r in evals.list_evals(ctx)]


def status_text(run: EvalPublic) -> str:
    if run.error:
        return t("eval.failed", id=run.id, error=run.error)
    return t("eval.status", id=run.id, status=run.status.value, progress=f"{run.progress * 100:.0f}", stage=run.stage)


def _fmt(value: Optional[float]) -> Any:
    return None if value is None else round(float(value), 4)


def metrics_table(run: EvalPublic, category: Optional[str]) -> pd.DataFrame:
    """Models by metrics (one row per model), for the whole set or one category."""
    records = []
    for result in run.results:
        metrics = result.categories.get(category, {}) if category else result.metrics
        records.append({t("eval.col_model"): result.model, **{m: _fmt(metrics.get(m)) for m in (*METRICS, "rows")}})
    return pd.DataFrame(records, columns=[t("eval.col_model"), *METRICS, "rows"])


def bar_chart(run: EvalPublic, metric: str, category: Optional[str]) -> go.Figure:
    names, values = [], []
    for result in run.results:
        metrics = result.categories.get(category, {}) if category else result.metrics
        names.append(result.model)
        values.append(metrics.get(metric))
    title = t("eval.chart_title", metric=metric) + (t("eval.lower_better") if metric in LOWER_IS_BETTER else "")
    figure = go.Figure(go.Bar(x=names, y=values, text=[None if v is None else f"{v:.3g}" for v in values]))
    figure.update_layout(title=title, height=320, margin=dict(l=40, r=20, t=50, b=40))
    return figure


def step_chart(ctx: StudioContext, run_id: int, metric: str, category: Optional[str]) -> go.Figure:
    points = evals.metric_by_step(ctx, run_id, metric, category)
    figure = go.Figure()
    for job in dict.fromkeys(p["job"] for p in points):
        mine = [p for p in points if p["job"] == job]
        figure.add_trace(go.Scatter(x=[p["step"] for p in mine], y=[p["value"] for p in mine], mode="lines+markers",
                                    name=f"job-{job}", text=[p["model"] for p in mine]))
    jobs = ", ".join(str(j) for j in dict.fromkeys(p["job"] for p in points)) or "-"
    figure.update_layout(title=t("eval.steps_title", metric=metric, job=jobs), height=320,
                         xaxis_title=t("eval.step"), margin=dict(l=40, r=20, t=50, b=40))
    return figure


def rows_table(rows, a: str, b: str) -> pd.DataFrame:
    columns = [t("eval.col_row"), t("eval.col_category"), t("eval.col_prompt"), t("eval.col_reference"), f"A: {a}",
               f"B: {b}"]
    records = [[r.index + 1, r.category or "", r.prompt + (f"\n\n{r.input}" if r.input else ""), r.reference or "",
                r.outputs.get(a, ""), r.outputs.get(b, "")] for r in rows]
    return pd.DataFrame(records, columns=columns)


# --- handlers -------------------------------------------------------------------------


def refresh_choices(ctx: StudioContext, chosen: list[str] | None, dataset: Optional[int], run_id: Optional[int]):
    models = model_choices(ctx)
    ids = {value for _, value in models}
    sets = dataset_choices(ctx)
    runs = run_choices(ctx)
    return (
        gr.Dropdown(choices=models, value=[m for m in chosen or [] if m in ids]),
        gr.Dropdown(choices=sets, value=dataset if dataset in {v for _, v in sets} else (sets[0][1] if sets else None)),
        gr.Dropdown(choices=runs, value=run_id if run_id in {v for _, v in runs} else (runs[0][1] if runs else None)),
    )


def start_eval(ctx: StudioContext, models: list[str] | None, dataset: Optional[int], split: str, max_rows: float,
          max_tokens: float, prompts: str, request: gr.Request = None):
    """Queue a run from the form; the run list then selects it."""
    typed = [line for line in (prompts or "").splitlines() if line.strip()]
    if not models:
        return notice("error", t("eval.refused"), [t("eval.pick_models")]), gr.Dropdown()
    try:
        body = EvalRequest(
            models=list(models), dataset_id=None if typed else dataset, split=split, max_rows=int(max_rows),
            prompts=typed or None, sampling=EvalSampling(max_tokens=int(max_tokens)),
        )
        run = evals.create_eval(ctx, body, user=getattr(request, "username", None))
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return notice("error", t("eval.refused"), lines), gr.Dropdown()
    except (ConfigError, NotFound) as exc:
        return notice("error", t("eval.refused"), getattr(exc, "errors", [str(exc)])), gr.Dropdown()
    message = notice("ok", t("eval.started", id=run.id, rows=run.row_count, models=len(run.models)))
    return message, gr.Dropdown(choices=run_choices(ctx), value=run.id)


def show_run(ctx: StudioContext, run_id: Optional[int], category: Optional[str], metric: str,
             a: Optional[str], b: Optional[str]):
    """Everything the selected run shows; the timer runs while it is unfinished."""
    if run_id is None:
        empty = gr.Dropdown(choices=[], value=None)
        return (t("eval.no_runs"), None, None, None, gr.Dropdown(choices=[(t("eval.all_categories"), "")], value=""),
                empty, empty, gr.Timer(active=False), gr.Button(visible=False))
    run = evals.get_eval(ctx, int(run_id))
    names = sorted({c for r in run.results for c in r.categories})
    category = category if category in names else ""
    models = run.models
    a = a if a in models else models[0]
    b = b if b in models and b != a else (models[1] if len(models) > 1 else models[0])
    has_results = bool(run.results)
    return (
        status_text(run),
        metrics_table(run, category or None) if has_results else None,
        bar_chart(run, metric, category or None) if has_results else None,
        step_chart(ctx, run.id, metric, category or None) if has_results else None,
        gr.Dropdown(choices=[(t("eval.all_categories"), "")] + [(n, n) for n in names], value=category),
        gr.Dropdown(choices=models, value=a),
        gr.Dropdown(choices=models, value=b),
        gr.Timer(active=not run.status.finished),
        gr.Button(visible=not run.status.finished),
    )


def show_rows(ctx: StudioContext, run_id: Optional[int], a: Optional[str], b: Optional[str], which: str):
    if run_id is None or not a or not b:
        return None, ""
    try:
        rows = evals.compare_rows(ctx, int(run_id), a, b, which)
    except (ConfigError, NotFound):
        return None, ""
    run = evals.get_eval(ctx, int(run_id))
    return rows_table(rows[:ROW_VIEW_LIMIT], a, b), t("eval.rows_count", shown=len(rows), total=run.row_count)


def cancel_eval(ctx: StudioContext, run_id: Optional[int]) -> str:
    if run_id is None:
        return ""
    try:
        run = evals.cancel_eval(ctx, int(run_id))
    except (evals.EvalRefused, NotFound) as exc:
        return notice("error", str(exc))
    return notice("ok", status_text(run))


# --- layout ---------------------------------------------------------------------------


def build(ctx: StudioContext, page: gr.Blocks, tab: gr.Tab) -> EvaluateTab:
    gr.Markdown(t("eval.title"))
    fields, sampling = EvalRequest.model_fields, EvalSampling.model_fields
    with gr.Row():
        models = gr.Dropdown(label=t("eval.models"), info=t("eval.models_info"), multiselect=True,
                             max_choices=evals.MAX_MODELS, scale=5, elem_id="eval-models")
        reload_btn = gr.Button(t("eval.reload"), size="md", scale=1, elem_id="eval-reload")
    with gr.Row():
        dataset = gr.Dropdown(label=t("eval.dataset"), info=t("eval.dataset_info"), scale=3, elem_id="eval-dataset")
        split = gr.Radio([(t("eval.split_validation"), "validation"), (t("eval.split_all"), "all")],
                         value="validation", label=t("eval.split"), scale=2, elem_id="eval-split")
        max_rows = gr.Number(fields["max_rows"].default, label=t("eval.max_rows"), info=fields["max_rows"].description,
                             precision=0, minimum=1, maximum=evals.MAX_ROWS, scale=1, elem_id="eval-max-rows")
        max_tokens = gr.Slider(1, 512, value=sampling["max_tokens"].default, step=1, label=t("eval.max_tokens"),
                               info=sampling["max_tokens"].description, scale=2, elem_id="eval-max-tokens")
    prompts = gr.Textbox(label=t("eval.prompts"), lines=2, elem_id="eval-prompts")
    start_btn = gr.Button(t("eval.start"), variant="primary", elem_id="eval-start")
    message = gr.HTML(elem_id="eval-message")

    with gr.Row():
        runs = gr.Dropdown(label=t("eval.runs"), scale=5, elem_id="eval-runs")
        cancel_btn = gr.Button(t("eval.cancel"), visible=False, scale=1, elem_id="eval-cancel")
    status = gr.Markdown(elem_id="eval-status")
    with gr.Row():
        category = gr.Dropdown([(t("eval.all_categories"), "")], value="", label=t("eval.category"),
                               elem_id="eval-category")
        metric = gr.Dropdown(list(METRICS), value="exact_match", label=t("eval.metric"), elem_id="eval-metric")
    table = gr.Dataframe(interactive=False, wrap=True, elem_id="eval-table")
    with gr.Row():
        bars = gr.Plot(elem_id="eval-bars")
        steps = gr.Plot(elem_id="eval-steps")
    gr.Markdown(t("eval.rows_title"))
    with gr.Row():
        model_a = gr.Dropdown(label=t("eval.model_a"), elem_id="eval-model-a")
        model_b = gr.Dropdown(label=t("eval.model_b"), elem_id="eval-model-b")
        which = gr.Radio([(t(f"eval.filter_{f}"), f) for f in evals.ROW_FILTERS], value="a_right_b_wrong",
                         label=t("eval.filter"), elem_id="eval-filter")
    rows_count = gr.Markdown(elem_id="eval-rows-count")
    rows = gr.Dataframe(interactive=False, wrap=True, elem_id="eval-rows")
    timer = gr.Timer(POLL_SECONDS, active=False)

    choices_in, choices_out = [models, dataset, runs], [models, dataset, runs]
    run_in = [runs, category, metric, model_a, model_b]
    run_out = [status, table, bars, steps, category, model_a, model_b, timer, cancel_btn]
    rows_in, rows_out = [runs, model_a, model_b, which], [rows, rows_count]
    for trigger in (page.load, tab.select, reload_btn.click):
        trigger(bind(refresh_choices, ctx), choices_in, choices_out, show_progress="hidden")
    def start(models_, dataset_, split_, max_rows_, max_tokens_, prompts_, request: gr.Request):
        # gr.Request is found by annotation, not through bind: the run records who started it
        return start_eval(ctx, models_, dataset_, split_, max_rows_, max_tokens_, prompts_, request)

    start_btn.click(start, [models, dataset, split, max_rows, max_tokens, prompts], [message, runs])
    for trigger in (runs.change, category.input, metric.input, timer.tick):
        trigger(bind(show_run, ctx), run_in, run_out, show_progress="hidden").then(
            bind(show_rows, ctx), rows_in, rows_out, show_progress="hidden")
    for trigger in (model_a.input, model_b.input, which.input):
        trigger(bind(show_rows, ctx), rows_in, rows_out, show_progress="hidden")
    cancel_btn.click(bind(cancel_eval, ctx), runs, message).then(bind(show_run, ctx), run_in, run_out, show_progress="hidden")
    from studio.ui import campaign_panel  # it imports this module's choice lists

    campaign_panel.build(ctx, page, tab)  # blind rating campaigns, below the automatic metrics
    return EvaluateTab(runs=runs)
