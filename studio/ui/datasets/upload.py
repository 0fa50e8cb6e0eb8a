"""Add a dataset: upload a file (with overrides and a column mapping for CSV/TSV) or the demo rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from studio.core.datasets import ALPACA_FIELDS, FILE_TYPES as FILE_TYPE_NAMES, SCHEMAS, DatasetError, ParseOptions
from studio.core.demo import DEMO_ROWS, demo_dataset
from studio.services import datasets
from studio.services.context import StudioContext
from studio.ui.datasets.cells import CELL_CHARS, cell_text, inert_markdown
from studio.ui.datasets.messages import refused, toast
from studio.ui.text import notice, t

FILE_TYPES = list(FILE_TYPE_NAMES)  # .json .jsonl .ndjson .csv .tsv .parquet
TABLE_TYPES = ("csv", "tsv")  # files whose columns can be mapped
# Column names that usually hold each field, best first (compared ignoring case and spaces)
COLUMN_NAMES = {
    "instruction": ("instruction", "prompt", "question", "query", "instructions", "task", "user"),
    "input": ("input", "context", "inputs"),
    "output": ("output", "response", "answer", "completion", "outputs", "target", "assistant"),
}


def _options(file_type: str | None, schema: str | None, mapping: tuple = ()) -> ParseOptions:
    columns = {target: source for target, source in zip(ALPACA_FIELDS, mapping) if source}
    return ParseOptions(file_type=file_type or None, schema=schema or None, columns=columns)


def _read(ctx: StudioContext, path: str) -> bytes:
    with open(path, "rb") as f:  # one byte over the limit is enough for the service to refuse
        return f.read(int(ctx.settings.max_upload_mb * 1e6) + 1)


def guess_columns(columns: list[str]) -> dict[str, str]:
    """{field: column} for the fields a column's name suggests (prompt -> instruction,
    context -> input, answer -> output, ...); each column is used once."""
    by_name = {c.strip().lower().replace(" ", "_"): c for c in columns}
    guess: dict[str, str] = {}
    for target, names in COLUMN_NAMES.items():
        column = next((by_name[n] for n in names if n in by_name and by_name[n] not in guess.values()), None)
        if column is not None:
            guess[target] = column
    return guess


def inspect_upload(ctx: StudioContext, path: str | None, file_type: str, schema: str):
    """After a file is chosen: what detection makes of it, a sample, and for a CSV/TSV
    the mapping dropdowns, preset to the columns whose names suggest the Alpaca fields
    (and the sample read with that mapping). The file emptied (after an upload) hides
    it all and leaves the message alone.
    Returns (inspection box, mapping row, 3 mapping dropdowns, columns text, sample, message)."""
    unmapped = gr.Dropdown(choices=[(t("datasets.map_none"), "")], value="")
    hidden = (gr.Column(visible=False), gr.Row(visible=False), unmapped, unmapped, unmapped, "", None)
    if not path:
        return *hidden, gr.skip()
    data = _read(ctx, path)
    try:
        found = datasets.inspect_file(ctx, Path(path).name, data, _options(file_type, schema))
        table, file_columns = found.file_type in TABLE_TYPES, found.columns
        guess = guess_columns(file_columns) if table else {}
        if any(guess.get(f) != f for f in guess):  # a column named otherwise: read the rows with the guess
            found = datasets.inspect_file(ctx, Path(path).name, data,
                                          _options(file_type, schema, tuple(guess.get(f, "") for f in ALPACA_FIELDS)))
    except DatasetError as exc:
        return *hidden, refused("datasets.inspect_refused", exc)
    choices = [(t("datasets.map_none"), "")] + [(c, c) for c in file_columns]
    mapping = [gr.Dropdown(choices=choices, value=guess.get(f, "")) for f in ALPACA_FIELDS]
    names = ", ".join(inert_markdown(c) for c in file_columns) or "-"
    columns = t("datasets.detected", type=found.file_type, schema=found.schema, columns=names)
    if table:
        pairs = ", ".join(f"{inert_markdown(c)} → {f}" for f, c in guess.items())
        columns += "\n\n" + (t("datasets.guessed", pairs=pairs) if guess else t("datasets.not_guessed"))
    return gr.Column(visible=True), gr.Row(visible=table), *mapping, columns, _sample(found), _inspection_notice(found)


def check_mapping(ctx: StudioContext, path: str | None, file_type: str, schema: str, *mapping: str):
    """After the user changes the mapping: the sample and problems under it. Returns
    (sample, message)."""
    if not path:
        return None, ""
    try:
        found = datasets.inspect_file(ctx, Path(path).name, _read(ctx, path), _options(file_type, schema, mapping))
    except DatasetError as exc:
        return None, refused("datasets.inspect_refused", exc)
    return _sample(found), _inspection_notice(found)


def _sample(found: datasets.FileInspection) -> pd.DataFrame | None:
    if not found.sample:
        return None
    present = list(dict.fromkeys(k for row in found.sample for k in row))
    columns = [c for c in (*ALPACA_FIELDS, "messages") if c in present] + [c for c in present if c not in ALPACA_FIELDS]
    return pd.DataFrame([[cell_text(row.get(c), CELL_CHARS) for c in columns] for row in found.sample], columns=columns)


def _inspection_notice(found: datasets.FileInspection) -> str:
    if not found.error_count:
        return notice("ok", t("datasets.inspect_ok", rows=f"{found.row_count:,}"))
    more = [t("datasets.more_problems", count=found.error_count - len(found.errors))] if found.error_count > len(found.errors) else []
    return notice("error", t("datasets.inspect_problems", count=found.error_count, rows=f"{found.row_count:,}"), found.errors + more)


def add_file(
    ctx: StudioContext, path: str | None, name: str, accept_partial: bool, file_type: str, schema: str, *mapping: str,
    progress: gr.Progress = gr.Progress(),
):
    """Store an uploaded file as a dataset; returns (message, added id or skip, the drop
    box: emptied once the file is stored, so the next upload starts clean)."""
    if not path:
        return notice("error", t("datasets.no_file")), gr.skip(), gr.skip()
    progress(0, desc=t("datasets.reading", file=Path(path).name))
    message, added = _store(ctx, Path(path).name, _read(ctx, path), name, accept_partial, _options(file_type, schema, mapping))
    return message, added, None if isinstance(added, int) else gr.skip()


def add_demo(ctx: StudioContext):
    """Store all the demo rows as a dataset, exactly as if they were an uploaded JSONL file."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in demo_dataset()).encode()
    return _store(ctx, "demo.jsonl", data, t("datasets.demo_name"), False, None)


def _store(ctx: StudioContext, filename: str, data: bytes, name: str, accept_partial: bool, options: ParseOptions | None):
    try:
        dataset, skipped = datasets.create_dataset(ctx, filename, data, name, accept_partial, options)
    except DatasetError as exc:
        return refused("datasets.refused", exc), gr.skip()
    title = t("datasets.added", name=dataset.name, id=dataset.id, rows=f"{dataset.row_count:,}", file=filename)
    if skipped:
        title += " " + t("datasets.skipped", count=len(skipped))
    toast(title)
    return notice("ok", title, skipped), dataset.id


@dataclass(frozen=True)
class UploadPanel:
    file: gr.File
    file_type: gr.Dropdown
    schema: gr.Dropdown
    inspection: gr.Column
    mapping_row: gr.Row
    mapping: list[gr.Dropdown]
    columns: gr.Markdown
    sample: gr.Dataframe
    name: gr.Textbox
    partial: gr.Checkbox
    add: gr.Button
    demo: gr.Button
    message: gr.HTML


def upload_panel() -> UploadPanel:
    gr.Markdown(t("datasets.upload_title"))
    file = gr.File(label=t("datasets.file"), file_types=FILE_TYPES, type="filepath", elem_id="dataset-file")
    with gr.Accordion(t("datasets.overrides"), open=False):
        file_type = gr.Dropdown(
            choices=[(t("datasets.auto_type"), "")] + [(f, f) for f in sorted(set(FILE_TYPE_NAMES.values()))],
            value="", label=t("datasets.file_type"), elem_id="dataset-file-type",
        )
        schema = gr.Dropdown(
            choices=[(t("datasets.auto_schema"), "")] + [(s, s) for s in SCHEMAS], value="",
            label=t("datasets.schema"), info=t("datasets.schema_info"), elem_id="dataset-schema",
        )
    with gr.Column(visible=False, elem_id="dataset-inspection") as inspection:
        columns = gr.Markdown(elem_id="dataset-columns")
        with gr.Row(visible=False, elem_id="dataset-mapping") as mapping_row:
            mapping = [
                gr.Dropdown(choices=[(t("datasets.map_none"), "")], value="", label=t(f"datasets.map.{f}"), elem_id=f"map-{f}")
                for f in ALPACA_FIELDS
            ]
        sample = gr.Dataframe(label=t("datasets.sample"), interactive=False, wrap=True, max_height=220, elem_id="dataset-sample")
    name = gr.Textbox(label=t("datasets.name"), placeholder=t("datasets.name_placeholder"), max_length=200)
    partial = gr.Checkbox(label=t("datasets.accept_partial"), info=t("datasets.accept_partial_info"), elem_id="dataset-partial")
    add = gr.Button(t("datasets.add"), variant="primary", elem_id="dataset-add")
    demo = gr.Button(t("datasets.demo"), elem_id="dataset-demo")
    gr.Markdown(t("datasets.demo_hint", rows=f"{DEMO_ROWS:,}"), elem_id="dataset-demo-hint")
    message = gr.HTML(elem_id="dataset-message")
    return UploadPanel(file, file_type, schema, inspection, mapping_row, mapping, columns, sample, name, partial, add, demo, message)
