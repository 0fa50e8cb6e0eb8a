"""The version history, going back to an older version, and exporting the version shown."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from studio.core.datasets import DatasetError
from studio.models import DatasetVersionPublic
from studio.services import datasets
from studio.services.context import NotFound, StudioContext
from studio.ui.datasets.cells import inert_markdown
from studio.ui.datasets.messages import refused, saved_version, toast
from studio.ui.text import notice, t

HISTORY_COLUMNS = ["version", "note", "rows", "hash", "created", "jobs"]


def history_frame(versions: list[DatasetVersionPublic]) -> pd.DataFrame:
    rows = [
        [v.number, v.note, v.row_count, v.content_hash[:12], f"{v.created_at:%Y-%m-%d %H:%M:%S}", v.used_by_jobs]
        for v in versions
    ]
    return pd.DataFrame(rows, columns=[t(f"datasets.history.{c}") for c in HISTORY_COLUMNS])


def show_history(ctx: StudioContext, dataset_id: int | None):
    """The version history and the 'go back to' choices. Returns (table, dropdown)."""
    if dataset_id is None:
        return None, gr.Dropdown(choices=[], value=None)
    try:
        versions = datasets.list_versions(ctx, dataset_id)
    except NotFound:
        return None, gr.Dropdown(choices=[], value=None)
    return history_frame(versions), _revert_choices(versions)


def describe(ctx: StudioContext, dataset_id: int | None) -> str:
    """The status line under the dataset picker: which dataset and version every panel
    below works on."""
    if dataset_id is None:
        return t("datasets.no_dataset")
    try:
        dataset = datasets.get_dataset(ctx, dataset_id)
        note = datasets.list_versions(ctx, dataset_id)[0].note
    except NotFound as exc:
        return str(exc)
    return t("datasets.status", name=inert_markdown(dataset.name), id=dataset.id, version=dataset.version,
             rows=f"{dataset.row_count:,}", note=inert_markdown(note))


def announce_version(ctx: StudioContext, changed: dict | None):
    """After a change: "'qa' version N saved: <note>" as a toast and in the status line,
    and the history with it first. Returns (status, table, dropdown)."""
    if not changed:
        return gr.skip(), gr.skip(), gr.skip()
    name = datasets.get_dataset(ctx, changed["dataset_id"]).name
    versions = datasets.list_versions(ctx, changed["dataset_id"])
    saved = next((v for v in versions if v.id == changed["version_id"]), versions[0])
    text = t("datasets.saved", name=name, version=saved.number, note=saved.note, rows=f"{saved.row_count:,}")
    toast(text)
    return notice("ok", text), history_frame(versions), _revert_choices(versions)


def _revert_choices(versions: list[DatasetVersionPublic]) -> gr.Dropdown:
    choices = [(t("datasets.revert_choice", version=v.number, note=v.note[:80]), v.id) for v in versions[1:]]
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)


def revert(ctx: StudioContext, dataset_id: int | None, version_id: int | None):
    """Go back to an older version (as a new version). Returns (message, changed)."""
    if dataset_id is None or version_id is None:
        return notice("error", t("datasets.pick_version")), gr.skip()
    try:
        saved = datasets.revert_to(ctx, dataset_id, version_id)
    except (DatasetError, NotFound) as exc:
        return refused("datasets.change_refused", exc), gr.skip()
    return saved_version(saved, None)


def export(ctx: StudioContext, view: dict | None, fmt: str):
    """The version shown as a file to download. Returns (message, file)."""
    if not view:
        return notice("error", t("datasets.no_dataset")), None
    try:
        filename, data, _ = datasets.export_version(ctx, view["dataset_id"], fmt, view["version_id"])
    except (DatasetError, NotFound) as exc:
        return refused("datasets.export_refused", exc), None
    path = _export_folder() / filename
    path.write_bytes(data)
    text = t("datasets.exported", name=view.get("name", ""), file=filename, version=view["version"])
    toast(text)
    return notice("ok", text), gr.File(value=str(path), visible=True)


def clear_versions():
    """Another dataset was picked: no message or download of the last one. Returns
    (revert message, export message, file)."""
    return "", "", gr.File(value=None, visible=False)


EXPORT_KEEP_SECONDS = 3600


def _export_folder() -> Path:
    """A fresh folder for one export in the system temp dir (Gradio serves files from
    there); exports older than an hour are removed, the browser has them by then."""
    root = Path(tempfile.gettempdir()) / "studio-exports"
    root.mkdir(exist_ok=True)
    cutoff = time.time() - EXPORT_KEEP_SECONDS
    for old in root.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=root))


@dataclass(frozen=True)
class VersionsPanel:
    table: gr.Dataframe
    choice: gr.Dropdown
    revert: gr.Button
    revert_message: gr.HTML
    fmt: gr.Radio
    export: gr.Button
    export_message: gr.HTML
    file: gr.File


def versions_panel() -> VersionsPanel:
    table = gr.Dataframe(interactive=False, wrap=True, max_height=320, elem_id="versions-table")
    with gr.Row(equal_height=True):
        choice = gr.Dropdown(label=t("datasets.revert_select"), choices=[], scale=3, elem_id="revert-select")
        revert_btn = gr.Button(t("datasets.revert"), scale=1, elem_id="revert-btn")
    revert_message = gr.HTML(elem_id="revert-message")
    gr.Markdown(t("datasets.export_title"))
    with gr.Row(equal_height=True):
        fmt = gr.Radio(choices=[("JSONL", "jsonl"), ("CSV", "csv")], value="jsonl", label=t("datasets.export_format"),
                       info=t("datasets.export_info"), scale=2, elem_id="export-format")
        export_btn = gr.Button(t("datasets.export"), scale=1, elem_id="export-btn")
    export_message = gr.HTML(elem_id="export-message")
    file = gr.File(label=t("datasets.export_file"), visible=False, interactive=False, elem_id="export-file")
    return VersionsPanel(table, choice, revert_btn, revert_message, fmt, export_btn, export_message, file)
