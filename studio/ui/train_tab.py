"""Train tab: pick a dataset, a base model, a method and a goal; everything else sits in
a closed Advanced section (the form generated from the job config), filled in from the
goal and the data. A time estimate and the plan show before launch; a launched job opens
in the Jobs tab."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.core.basemodels import DEMO
from studio.core.config import DEMO_PRESET, PRESETS, ConfigError, TemplateSection, build_config
from studio.core.datasets import DatasetError
from studio.core.goals import DEFAULT_GOAL, GOALS, METHODS, DataShape, goal_config
from studio.core.timing import format_duration
from studio.services import datasets, jobs
from studio.services.context import NotFound, StudioContext
from studio.ui.datasets_tab import DatasetsTab, dataset_choices
from studio.ui.forms import ConfigForm, bind, explain_error, render_form
from studio.ui import location
from studio.ui.jobs_tab import TAB_ID as JOBS_TAB_ID
from studio.ui.text import notice, t


@dataclass(frozen=True)
class TrainTab:
    """Handles other tabs use: `launched` holds the id of the job launched last in this
    session and changes whenever one is launched."""

    launched: gr.State
    dataset: gr.Dropdown


def preset_choices() -> list[tuple[str, str]]:
    return [(t("train.preset_none"), "")] + [(name, name) for name in PRESETS]


# --- handlers -------------------------------------------------------------------------


def show_datasets(ctx: StudioContext, first_choice: int | None, second_choice: int | None):
    """The dataset dropdown, refreshed, showing the first choice that still exists, else
    the newest dataset."""
    items = datasets.list_datasets(ctx)
    ids = [d.id for d in items]
    value = next((i for i in (first_choice, second_choice) if i in ids), ids[0] if ids else None)
    return gr.Dropdown(choices=dataset_choices(items), value=value)


def data_shape(ctx: StudioContext, dataset_id: int, base_model: str) -> DataShape | None:
    """Rows and token lengths of a dataset under a base model's tokenizer (the quality
    report's figures, cached); None when the model's tokenizer cannot be read."""
    dataset = datasets.get_dataset(ctx, dataset_id)
    held_out = dataset.validation_rows or round(dataset.row_count * 0.1)
    try:
        report = datasets.quality_report(ctx, dataset_id, base_model, TemplateSection(), 512)
    except DatasetError:
        return None
    tokens = report["tokens"]
    return DataShape(dataset.row_count - held_out, int(tokens["max"]), float(tokens["mean"]))


# The Advanced settings the user changed by hand, by position in the form (browser side, so
# typing costs no round trip to the server).
REMEMBER_EDIT_JS = "(value) => { (window.studioEdits ??= {})[%d] = value; return []; }"
KEEP_EDITS_JS = "(...values) => values.map((v, i) => (window.studioEdits ?? {}).hasOwnProperty(i) ? window.studioEdits[i] : v)"
FORGET_EDITS_JS = "() => { window.studioEdits = {}; return []; }"


def apply_goal(ctx: StudioContext, form: ConfigForm, dataset_id: int | None, base_model: str, method: str, goal: str):
    """Fill the Advanced settings from the goal, the method and the data."""
    shape = None
    if dataset_id is not None:
        try:
            shape = data_shape(ctx, dataset_id, (base_model or "").strip() or DEMO)
        except NotFound:
            shape = None
    config = build_config(goal_config(goal or DEFAULT_GOAL, method or "lora", (base_model or "").strip(), shape))
    return form.values(config)


def open_datasets(ctx: StudioContext, added: int | None, request: gr.Request):
    """At page load: the dataset dropdown, showing the dataset the URL names (?dataset=2)."""
    return show_datasets(ctx, location.wanted_id(request, "dataset"), added)


def apply_preset(form: ConfigForm, preset: str):
    """Fill the form (and the base model, where the preset names one) from a preset."""
    config = build_config({}, preset=preset or None)
    base_model = PRESETS.get(preset, {}).get("model", {}).get("base_model")
    return [base_model if base_model else gr.skip(), *form.values(config)]


def launch(ctx: StudioContext, form: ConfigForm, dataset_id: int | None, base_model: str, name: str, *values):
    """Create the job from the form; on success open it in the Jobs tab.
    Returns (message, launched job id); the browser then opens the Jobs tab."""
    if dataset_id is None:
        return notice("error", t("train.no_dataset")), gr.skip()
    try:
        # preset "": the form already shows the preset's values, and the user's edits win
        job = jobs.create_job(ctx, dataset_id, base_model or "", form.partial(values), preset="", name=name or "")
    except (ConfigError, DatasetError) as exc:
        return notice("error", t("train.refused"), map(explain_error, exc.errors)), gr.skip()
    except NotFound as exc:
        return notice("error", t("train.refused"), [str(exc)]), gr.skip()
    return notice("ok", t("train.launched", id=job.id)), job.id


def show_plan(ctx: StudioContext, form: ConfigForm, dataset_id: int | None, base_model: str, *values):
    """The pre-launch preview: parameter counts, memory estimate, steps and warnings for
    the form as it stands, or what is wrong with it."""
    if dataset_id is None:
        return t("train.plan_no_dataset")
    try:
        preview = jobs.preview_launch(ctx, dataset_id, base_model or "", form.partial(values))
    except (ConfigError, DatasetError) as exc:
        return t("train.plan_invalid") + "".join(f"\n- {explain_error(e)}" for e in exc.errors)
    except NotFound as exc:
        return str(exc)
    plan = preview.plan
    lines = [t("train.plan_title")]
    if plan.total_params:
        share = 100 * plan.trainable_params / plan.total_params
        lines.append(t("train.plan_params", trainable=plan.trainable_params, total=plan.total_params, share=share))
        lines.append(t("train.plan_memory", gib=plan.memory_bytes / 2**30, precision=plan.precision))
    lines.append(t("train.plan_steps", rows=preview.train_rows, steps=preview.steps))
    estimate = preview.estimate
    if estimate is None:
        lines.append(t("train.plan_time_none"))
    else:
        detail = (
            t("train.plan_time_measured", runs=estimate.detail) if estimate.basis == "measured"
            else t("train.plan_time_calibrated") if estimate.detail == "calibrated" else t("train.plan_time_rough")
        )
        lines.append(t("train.plan_time", low=format_duration(estimate.low), high=format_duration(estimate.high), detail=detail))
    lines.append(t("train.plan_runs_on", where=preview.runs_on))
    lines += [t("train.plan_warning", text=w) for w in plan.warnings]
    return "\n".join(lines)


# --- layout ---------------------------------------------------------------------------


def build(ctx: StudioContext, page: gr.Blocks, tab: gr.Tab, data: DatasetsTab) -> TrainTab:
    """Render the tab inside `tab`; launching opens the Jobs tab."""
    launched = gr.State(None)
    with gr.Row():
        dataset = gr.Dropdown(label=t("train.dataset"), info=t("train.dataset_info"), elem_id="train-dataset")
        base_model = gr.Textbox(
            value=DEMO, label=t("train.base_model"), info=t("train.base_model_info"), max_length=500, elem_id="base-model"
        )
    method = gr.Radio(
        choices=[(sentence, name) for name, sentence in METHODS.items()], value="lora", label=t("train.method"),
        elem_id="train-method",
    )
    with gr.Row():
        goal = gr.Radio(
            choices=list(GOALS), value=DEFAULT_GOAL, label=t("train.goal"), info=t("train.goal_info"), scale=3,
            elem_id="train-goal",
        )
        name = gr.Textbox(label=t("train.job_name"), placeholder=t("train.job_name_placeholder"), max_length=200, scale=2)
    plan = gr.Markdown(elem_id="train-plan")
    launch_btn = gr.Button(t("train.launch"), variant="primary", elem_id="launch")
    message = gr.HTML(elem_id="launch-message")
    with gr.Accordion(t("train.advanced"), open=False, elem_id="train-advanced"):
        gr.Markdown(t("train.advanced_help"))
        preset = gr.Dropdown(
            choices=preset_choices(), value=None, label=t("train.preset"), info=t("train.preset_info"),
            elem_id="preset",
        )
        form = render_form(build_config({}, preset=DEMO_PRESET))

    # After an upload show the new dataset; otherwise keep the user's choice.
    data.added.change(bind(show_datasets, ctx), [data.added, dataset], dataset, show_progress="hidden")
    def open_train(added: int | None, request: gr.Request):  # gr.Request is found by annotation, not through bind
        return open_datasets(ctx, added, request)

    page.load(open_train, data.added, dataset, show_progress="hidden")
    tab.select(bind(show_datasets, ctx), [dataset, data.added], dataset, show_progress="hidden")
    dataset.change(None, dataset, None, js=location.set_param_js("dataset"))
    # .input and .blur: what the user does; a dataset picked for them (after an upload) counts too.
    # A setting the user typed stays theirs: the browser remembers it and puts it back after
    # each goal reply, also a reply that was on its way while they typed. A preset resets all.
    for index, component in enumerate(form.components):
        component.input(None, component, None, js=REMEMBER_EDIT_JS % index)
    gr.on(
        [dataset.change, base_model.blur, base_model.submit, method.input, goal.input],
        bind(apply_goal, ctx, form), [dataset, base_model, method, goal], form.components,
        trigger_mode="always_last", show_progress="hidden",
    ).then(None, form.components, form.components, js=KEEP_EDITS_JS, show_progress="hidden")
    preset.input(None, None, None, js=FORGET_EDITS_JS)
    preset.input(bind(apply_preset, form), preset, [base_model, *form.components])
    # preprocess=False: out-of-range numbers reach build_config, which names every bad
    # field at once, instead of Gradio stopping at the first with an unnamed toast.
    launch_btn.click(
        bind(launch, ctx, form), [dataset, base_model, name, *form.components], [message, launched],
        preprocess=False,
    ).then(None, message, None, js=location.open_tab_js(JOBS_TAB_ID, when_ok=True))  # (a State never reaches the browser)
    gr.on(
        # tab.select: runs that finished since change the time estimate
        [tab.select, dataset.change, base_model.change, *(c.change for c in form.components)],
        bind(show_plan, ctx, form), [dataset, base_model, *form.components], plan,
        preprocess=False, trigger_mode="always_last", show_progress="hidden",
    )
    return TrainTab(launched=launched, dataset=dataset)
