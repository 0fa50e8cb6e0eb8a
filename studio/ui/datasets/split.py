"""Hold out a validation split, stored in the rows as a new version."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.core.datasets import ALPACA_FIELDS, DatasetError
from studio.services import datasets
from studio.services.context import NotFound, StudioContext
from studio.ui.datasets.messages import refused, saved_version
from studio.ui.text import notice, t


def column_choices(view: dict | None):
    """The split's column dropdowns, offering the columns of the version shown."""
    columns = [c for c in (view or {}).get("columns", []) if c not in (*ALPACA_FIELDS, "messages")]
    choices = [(t("datasets.split_no_column"), "")] + [(c, c) for c in columns]
    stratify = "category" if "category" in columns else ""
    return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices, value=stratify)


def split(ctx: StudioContext, view: dict | None, fraction: float | None, seed: float | None, by_column: str, stratify: str):
    """Store a train / validation split as a new version. Returns (message, changed)."""
    if not view:
        return notice("error", t("datasets.no_dataset")), gr.skip()
    if fraction is None or seed is None:
        return notice("error", t("datasets.change_refused"), [t("datasets.split_numbers")]), gr.skip()
    try:
        saved = datasets.split_dataset(
            ctx, view["dataset_id"], float(fraction), int(seed), by_column or None, stratify or None, view["version_id"]
        )
    except (DatasetError, NotFound) as exc:
        return refused("datasets.change_refused", exc), gr.skip()
    return saved_version(saved, view["version_id"])


@dataclass(frozen=True)
class SplitPanel:
    fraction: gr.Number
    seed: gr.Number
    by_column: gr.Dropdown
    stratify: gr.Dropdown
    run: gr.Button
    message: gr.HTML


def split_panel() -> SplitPanel:
    gr.Markdown(t("datasets.split_intro"))
    with gr.Row():
        fraction = gr.Number(value=0.1, minimum=0.0, maximum=0.9, step=0.05, label=t("datasets.split_fraction"),
                             info=t("datasets.split_fraction_info"), elem_id="split-fraction")
        seed = gr.Number(value=0, minimum=0, maximum=2**31 - 1, precision=0, label=t("datasets.split_seed"),
                         elem_id="split-seed")
        by_column = gr.Dropdown(choices=[(t("datasets.split_no_column"), "")], value="", allow_custom_value=True, label=t("datasets.split_by"),
                                info=t("datasets.split_by_info"), elem_id="split-by")
        stratify = gr.Dropdown(choices=[(t("datasets.split_no_column"), "")], value="", allow_custom_value=True, label=t("datasets.split_stratify"),
                               info=t("datasets.split_stratify_info"), elem_id="split-stratify")
    run = gr.Button(t("datasets.split"), variant="primary", elem_id="split-btn")
    message = gr.HTML(elem_id="split-message")
    return SplitPanel(fraction, seed, by_column, stratify, run, message)
