"""Datasets tab: upload a file (or load the demo rows), list datasets, page through one.

Handlers take the StudioContext first (bound in `build`), then the controls' values, make
one service call and return updates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from studio.core.datasets import ALPACA_FIELDS, DatasetError
from studio.core.demo import demo_dataset
from studio.models import DatasetPublic
from studio.services import datasets
from studio.services.context import NotFound, StudioContext
from studio.ui.forms import bind
from studio.ui.text import notice, t

PAGE_ROWS = 20
FILE_TYPES = [".json", ".jsonl", ".csv", ".tsv"]
TABLE_COLUMNS = ["id", "name", "rows", "file", "created"]


@dataclass(frozen=True)
class DatasetsTab:
    """Handles other tabs use: `added` holds the id of the dataset added last in this
    session and changes whenever one is added."""

    added: gr.State


def dataset_choices(items: list[DatasetPublic]) -> list[tuple[str, int]]:
    """Dropdown choices (label, id), newest first."""
    return [(t("datasets.choice", name=d.name, id=d.id, rows=d.row_count), d.id) for d in items]


def datasets_frame(items: list[DatasetPublic]) -> pd.DataFrame:
    rows = [[d.id, d.name, d.row_count, d.source_filename, f"{d.created_at:%Y-%m-%d %H:%M}"] for d in items]
    return pd.DataFrame(rows, columns=[t(f"datasets.col.{c}") for c in TABLE_COLUMNS])


def rows_table(rows: list[dict]) -> gr.Dataframe:
    """Rows as a table: the Alpaca fields first and widest, any other columns after."""
    extra = sorted({k for row in rows for k in row} - set(ALPACA_FIELDS))
    widths = ["34%", "22%", "26%"] + [f"{18 / len(extra):.0f}%"] * len(extra) if extra else ["40%", "25%", "35%"]
    frame = pd.DataFrame(rows, columns=[*ALPACA_FIELDS, *extra]).fillna("")
    return gr.Dataframe(value=frame, column_widths=widths)


# --- handlers -------------------------------------------------------------------------


def add_file(ctx: StudioContext, path: str | None, name: str, accept_partial: bool):
    """Store an uploaded file as a dataset; returns (message, added id or skip)."""
    if not path:
        return notice("error", t("datasets.no_file")), gr.skip()
    with open(path, "rb") as f:  # one byte over the limit is enough for the service to refuse
        data = f.read(int(ctx.settings.max_upload_mb * 1e6) + 1)
    return _store(ctx, Path(path).name, data, name, accept_partial)


def add_demo(ctx: StudioContext):
    """Store the demo rows as a dataset, exactly as if they were an uploaded JSONL file."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in demo_dataset()).encode()
    return _store(ctx, "demo.jsonl", data, t("datasets.demo_name"), False)


def _store(ctx: StudioContext, filename: str, data: bytes, name: str, accept_partial: bool):
    try:
        dataset, skipped = datasets.create_dataset(ctx, filename, data, name, accept_partial)
    except DatasetError as exc:
        return notice("error", t("datasets.refused"), exc.errors), gr.skip()
    title = t("datasets.added", name=dataset.name, id=dataset.id, rows=dataset.row_count, file=filename)
    if skipped:
        title += " " + t("datasets.skipped", count=len(skipped))
    return notice("ok", title, skipped), dataset.id


def show_datasets(ctx: StudioContext, selected: int | None):
    """The datasets table and the preview dropdown (showing selected, else the newest)."""
    items = datasets.list_datasets(ctx)
    ids = [d.id for d in items]
    value = selected if selected in ids else (ids[0] if ids else None)
    return datasets_frame(items), gr.Dropdown(choices=dataset_choices(items), value=value)


def show_page(ctx: StudioContext, dataset_id: int | None, offset: int):
    """One page of rows from offset; an empty page past the end keeps the current one."""
    if dataset_id is None:
        return pd.DataFrame(), 0, t("datasets.page_empty")
    try:
        rows = datasets.preview_rows(ctx, dataset_id, max(0, offset), PAGE_ROWS)
    except NotFound as exc:
        return pd.DataFrame(), 0, str(exc)
    if not rows and offset > 0:
        return gr.skip(), gr.skip(), gr.skip()
    label = t("datasets.page", first=offset + 1, last=offset + len(rows)) if rows else t("datasets.page_empty")
    return rows_table(rows), offset, label


def first_page(ctx: StudioContext, dataset_id: int | None):
    return show_page(ctx, dataset_id, 0)


def next_page(ctx: StudioContext, dataset_id: int | None, offset: int):
    return show_page(ctx, dataset_id, offset + PAGE_ROWS)


def previous_page(ctx: StudioContext, dataset_id: int | None, offset: int):
    return show_page(ctx, dataset_id, max(0, offset - PAGE_ROWS))


def pick_row(evt: gr.SelectData) -> int:
    """The id of the dataset whose table row was clicked."""
    return int(evt.row_value[0])


# --- layout ---------------------------------------------------------------------------


def build(ctx: StudioContext, page: gr.Blocks) -> DatasetsTab:
    """Render the tab inside the current gr.Tab."""
    added = gr.State(None)
    offset = gr.State(0)
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown(t("datasets.upload_title"))
            upload = gr.File(label=t("datasets.file"), file_types=FILE_TYPES, type="filepath", elem_id="dataset-file")
            name = gr.Textbox(label=t("datasets.name"), placeholder=t("datasets.name_placeholder"), max_length=200)
            partial = gr.Checkbox(label=t("datasets.accept_partial"), info=t("datasets.accept_partial_info"))
            add_btn = gr.Button(t("datasets.add"), variant="primary", elem_id="dataset-add")
            demo_btn = gr.Button(t("datasets.demo"), elem_id="dataset-demo")
            gr.Markdown(t("datasets.demo_hint"))
            message = gr.HTML(elem_id="dataset-message")
        with gr.Column(scale=2):
            gr.Markdown(t("datasets.list_title"))
            table = gr.Dataframe(interactive=False, max_height=260, elem_id="datasets-table")
            gr.Markdown(t("datasets.preview_title"))
            selected = gr.Dropdown(label=t("datasets.preview_select"), elem_id="preview-select")
            with gr.Row(equal_height=True):
                page_label = gr.Markdown(elem_id="preview-page")
                prev_btn = gr.Button(t("datasets.prev"), size="sm", scale=0, min_width=140, elem_id="preview-prev")
                next_btn = gr.Button(t("datasets.next"), size="sm", scale=0, min_width=140, elem_id="preview-next")
            rows = gr.Dataframe(interactive=False, wrap=True, max_height=420, elem_id="preview-table")

    add_btn.click(bind(add_file, ctx), [upload, name, partial], [message, added])
    demo_btn.click(bind(add_demo, ctx), None, [message, added])
    gr.on([page.load, added.change], bind(show_datasets, ctx), [added], [table, selected], show_progress="hidden")
    table.select(pick_row, None, selected)
    page_out = [rows, offset, page_label]
    selected.change(bind(first_page, ctx), [selected], page_out)
    prev_btn.click(bind(previous_page, ctx), [selected, offset], page_out)
    next_btn.click(bind(next_page, ctx), [selected, offset], page_out)
    return DatasetsTab(added=added)
