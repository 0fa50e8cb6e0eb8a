"""Edit a row, add one, delete some: each makes a new version of the dataset."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.core.datasets import ALPACA_FIELDS, DatasetError, json_problem
from studio.services import datasets
from studio.services.context import NotFound, StudioContext
from studio.ui.datasets.cells import field_text
from studio.ui.datasets.messages import refused, saved_version
from studio.ui.text import notice, t

MAX_DELETE = 100_000  # indices one delete may name
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_indices(text: str) -> list[int]:
    """'3, 7-9' -> [3, 7, 8, 9]. Raises ValueError with a message naming the bad part."""
    indices: set[int] = set()
    for part in filter(None, (p.strip() for p in (text or "").replace(";", ",").split(","))):
        if part.isdigit():
            indices.add(int(part))
            continue
        match = _RANGE.match(part)
        if not match:
            raise ValueError(t("datasets.bad_index", part=part))
        first, last = int(match[1]), int(match[2])
        if first > last:
            raise ValueError(t("datasets.bad_range", part=part))
        if last - first + len(indices) > MAX_DELETE:
            raise ValueError(t("datasets.too_many_rows", limit=f"{MAX_DELETE:,}"))
        indices.update(range(first, last + 1))
    if not indices:
        raise ValueError(t("datasets.no_indices"))
    return sorted(indices)


def parse_extra_fields(text: str) -> dict[str, str]:
    """'category: geo' lines -> {"category": "geo"}. Raises ValueError naming the line."""
    fields: dict[str, str] = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(t("datasets.bad_extra", line=number, text=line.strip()[:60]))
        fields[name.strip()] = value.strip()
    return fields


def add_row_form(view: dict | None):
    """The add-row fields for the dataset's row shape: Alpaca fields, or chat messages."""
    chat = (view or {}).get("kind") == "chat"
    return *[gr.Textbox(visible=not chat)] * 4, gr.Textbox(visible=chat)


def mark_table_row(text: str, evt: gr.EventData):
    """The delete box with a Ctrl-clicked row's index added, or removed when it was there,
    and its panel opened. Returns (box, panel)."""
    index = int(evt.index)
    try:
        indices = set(parse_indices(text)) if (text or "").strip() else set()
    except ValueError:  # the box held something else: start again from this row
        indices = set()
    indices ^= {index}
    return ", ".join(str(i) for i in sorted(indices)), gr.Accordion(open=True)


def load_row(ctx: StudioContext, dataset_id: int | None, index: float | None, field: str | None):
    """The edit form for one row of the newest version. Returns (message, editing state,
    field dropdown, value, row view); `editing` remembers the version the form shows, so
    saving it over a newer version is refused instead of overwriting someone's edit."""
    if dataset_id is None or index is None or index < 0:
        return notice("error", t("datasets.pick_row")), None, gr.Dropdown(choices=[], value=None), "", None
    try:
        page = datasets.page_rows(ctx, dataset_id, int(index), 1)
    except NotFound as exc:
        return notice("error", str(exc)), None, gr.Dropdown(choices=[], value=None), "", None
    if not page.rows:
        message = t("datasets.no_such_row", index=int(index), last=page.total - 1)
        return notice("error", message), None, gr.Dropdown(choices=[], value=None), "", None
    return "", *_row_form(ctx, dataset_id, page, field)


def reload_row(ctx: StudioContext, changed: dict | None, editing: dict | None, field: str | None):
    """The open edit form after a new version: the same row in the newest version. After a
    delete the form follows its row to its new index (the row # box with it), and closes
    if the row was deleted. Returns (message, editing, field, value, row, row #)."""
    if not editing:
        return (gr.skip(),) * 6
    index = editing["index"]
    deleted = (changed or {}).get("deleted", [])
    if index in deleted:
        return gr.skip(), None, gr.Dropdown(choices=[], value=None), "", None, None
    index -= sum(1 for i in deleted if i < index)
    try:
        page = datasets.page_rows(ctx, editing["dataset_id"], index, 1)
    except NotFound:
        page = None
    if page is None or not page.rows:  # gone (e.g. a quality fix dropped it)
        return gr.skip(), None, gr.Dropdown(choices=[], value=None), "", None, None
    return gr.skip(), *_row_form(ctx, editing["dataset_id"], page, field), index


def _row_form(ctx: StudioContext, dataset_id: int, page: datasets.RowPage, field: str | None):
    item = page.rows[0]
    row = item["row"]
    name = datasets.get_dataset(ctx, dataset_id).name
    editing = {"dataset_id": dataset_id, "name": name, "version_id": page.version_id, "version": page.version,
               "index": item["index"], "row": row}
    fields = list(dict.fromkeys([*(f for f in page.columns if f in row or f in ALPACA_FIELDS), *row]))
    if field not in fields:
        field = "messages" if "messages" in row else "output"
    label = t("datasets.edit_field_of", index=item["index"], name=name, version=page.version)
    return editing, gr.Dropdown(choices=fields, value=field, label=label), field_text(row.get(field)), row


def clear_form():
    """Another dataset was picked: nothing of the last one stays in the edit, add and
    delete forms, so nothing can be saved into it by mistake. Returns (message, editing,
    field, value, row, row #, delete box, add message, delete message)."""
    field = gr.Dropdown(choices=[], value=None, label=t("datasets.edit_field"))
    return "", None, field, "", None, None, "", "", ""


def show_field(editing: dict | None, field: str | None) -> str:
    """The value of the chosen field of the row in the form (no service call)."""
    return field_text((editing or {}).get("row", {}).get(field)) if field else ""


def save_cell(ctx: StudioContext, dataset_id: int | None, editing: dict | None, field: str | None, value: str):
    """Save the edited field as a new version of the dataset picked (dataset_id), which
    must be the one the form's row came from. Returns (message, changed)."""
    if not editing:
        return notice("error", t("datasets.pick_row")), gr.skip()
    if editing["dataset_id"] != dataset_id:  # picked another while the form was open
        return notice("error", t("datasets.change_refused"), [t("datasets.other_dataset")]), gr.skip()
    try:
        saved = datasets.edit_cell(ctx, editing["dataset_id"], editing["index"], field or "", value or "", editing["version_id"])
    except (DatasetError, NotFound) as exc:
        return refused("datasets.change_refused", exc), gr.skip()
    return saved_version(saved, editing["version_id"])


def add_new_row(
    ctx: StudioContext, view: dict | None, instruction: str, input_text: str, output: str, extra: str, messages: str
):
    """Append a row (Alpaca fields and extra 'name: value' lines, or chat messages as
    JSON) to the version shown. Returns (message, changed)."""
    if not view:
        return notice("error", t("datasets.no_dataset")), gr.skip()
    try:
        if view["kind"] == "chat":
            row: dict[str, Any] = {"messages": json.loads(messages or "")}
        else:
            row = {**parse_extra_fields(extra), "instruction": instruction, "input": input_text, "output": output}
    except json.JSONDecodeError as exc:
        return notice("error", t("datasets.change_refused"), [t("datasets.bad_messages", error=json_problem(exc, "text"))]), gr.skip()
    except ValueError as exc:
        return notice("error", t("datasets.change_refused"), [str(exc)]), gr.skip()
    try:
        saved = datasets.add_row(ctx, view["dataset_id"], row, view["version_id"])
    except (DatasetError, NotFound) as exc:
        return refused("datasets.change_refused", exc), gr.skip()
    return saved_version(saved, view["version_id"])


def delete_selected(ctx: StudioContext, view: dict | None, text: str):
    """Delete the rows named like '3, 7-9' from the version shown. Returns (message,
    changed, delete box): the box is emptied once they are gone, so a second click cannot
    delete the rows that moved up into those places."""
    if not view:
        return notice("error", t("datasets.no_dataset")), gr.skip(), gr.skip()
    try:
        indices = parse_indices(text)
    except ValueError as exc:
        return notice("error", t("datasets.change_refused"), [str(exc)]), gr.skip(), gr.skip()
    try:
        saved = datasets.delete_rows(ctx, view["dataset_id"], indices, view["version_id"])
    except (DatasetError, NotFound) as exc:
        return refused("datasets.change_refused", exc), gr.skip(), gr.skip()
    message, changed = saved_version(saved, view["version_id"])
    if isinstance(changed, dict):
        changed["deleted"] = indices  # the open edit form follows its row (reload_row)
    return message, changed, ""


@dataclass(frozen=True)
class EditPanel:
    index: gr.Number
    load: gr.Button
    field: gr.Dropdown
    value: gr.Textbox
    row: gr.JSON
    save: gr.Button
    message: gr.HTML  # under Save: what became of a load or a save
    add_fields: list[gr.Textbox]  # instruction, input, output, extra lines, messages
    add: gr.Button
    add_message: gr.HTML
    delete_panel: gr.Accordion
    delete_text: gr.Textbox
    delete: gr.Button
    delete_message: gr.HTML


def edit_panel() -> EditPanel:
    with gr.Accordion(t("datasets.edit_title"), open=True, elem_id="edit-panel"):
        with gr.Row(equal_height=True):
            index = gr.Number(label=t("datasets.row_index"), info=t("datasets.row_index_info"), precision=0, minimum=0,
                              scale=1, elem_id="edit-index")
            load = gr.Button(t("datasets.load_row"), size="sm", scale=0, min_width=120, elem_id="edit-load")
            field = gr.Dropdown(label=t("datasets.edit_field"), choices=[], allow_custom_value=True, scale=2,
                                elem_id="edit-field")
        value = gr.Textbox(label=t("datasets.edit_value"), lines=3, max_lines=20, elem_id="edit-value")
        save = gr.Button(t("datasets.save"), variant="primary", elem_id="edit-save")
        message = gr.HTML(elem_id="edit-message")
        row = gr.JSON(label=t("datasets.edit_row"), elem_id="edit-row")
    with gr.Accordion(t("datasets.add_row_title"), open=False, elem_id="add-row-panel"):
        add_fields = [
            gr.Textbox(label=t(f"datasets.new.{f}"), lines=2, elem_id=f"new-{f}",
                       info=t("datasets.new.extra_info") if f == "extra" else None)
            for f in ("instruction", "input", "output", "extra")
        ]
        add_fields.append(gr.Textbox(label=t("datasets.new.messages"), info=t("datasets.new.messages_info"), lines=4,
                                     visible=False, elem_id="new-messages"))
        add = gr.Button(t("datasets.add_row"), elem_id="add-row")
        add_message = gr.HTML(elem_id="add-row-message")
    with gr.Accordion(t("datasets.delete_title"), open=False, elem_id="delete-panel") as delete_panel:
        with gr.Row(equal_height=True):
            delete_text = gr.Textbox(label=t("datasets.delete_rows"), placeholder="3, 7-9", scale=3, elem_id="delete-rows")
            delete = gr.Button(t("datasets.delete"), variant="stop", scale=1, elem_id="delete-btn")
        delete_message = gr.HTML(elem_id="delete-message")
    return EditPanel(index, load, field, value, row, save, message, add_fields, add, add_message, delete_panel,
                     delete_text, delete, delete_message)
