"""The datasets list and the dropdown that picks the dataset every other panel works on."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from studio.models import DatasetPublic
from studio.services import datasets
from studio.services.context import StudioContext
from studio.ui.text import t

TABLE_COLUMNS = ["id", "name", "version", "rows", "kind", "file", "created"]


def dataset_choices(items: list[DatasetPublic]) -> list[tuple[str, int]]:
    """Dropdown choices (label, id), newest first."""
    return [(t("datasets.choice", name=d.name, id=d.id, rows=d.row_count), d.id) for d in items]


def datasets_frame(items: list[DatasetPublic]) -> pd.DataFrame:
    rows = [
        [d.id, d.name, d.version, d.row_count, d.kind, d.source_filename, f"{d.created_at:%Y-%m-%d %H:%M}"]
        for d in items
    ]
    return pd.DataFrame(rows, columns=[t(f"datasets.col.{c}") for c in TABLE_COLUMNS])


def show_datasets(ctx: StudioContext, selected: int | None):
    """The datasets table and the dataset dropdown (showing selected, else the newest)."""
    items = datasets.list_datasets(ctx)
    ids = [d.id for d in items]
    value = selected if selected in ids else (ids[0] if ids else None)
    return datasets_frame(items), gr.Dropdown(choices=dataset_choices(items), value=value)


def refresh_datasets(ctx: StudioContext):
    """After a new version: the table and the dropdown's labels (row counts), leaving the
    selection alone so the open dataset does not reload."""
    items = datasets.list_datasets(ctx)
    return datasets_frame(items), gr.Dropdown(choices=dataset_choices(items))


def pick_dataset_row(evt: gr.SelectData) -> int:
    """The id of the dataset whose table row was clicked."""
    return int(evt.row_value[0])
