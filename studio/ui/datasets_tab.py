"""Datasets tab: add a dataset (upload with overrides and a column mapping, or the demo
rows), then work on one: browse and search its rows, edit / add / delete rows, go back to
an older version, export, split, read its quality report and see one row as the model
sees it.

Handlers take the StudioContext first (bound in `build`), then the controls' values, make
one service call (studio.services.datasets) and return updates. Every change makes a new
version; a change handler only reports the new version in the `changed` state, and the
refreshes hang off that state's change event (the history announces "version N saved:
<note>", the table, the filters, the edit form and the datasets list reload).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import gradio as gr
import pandas as pd
import plotly.io as pio

from studio.core.config import TemplateSection, TrainingSection
from studio.core.datasets import ALPACA_FIELDS, FILE_TYPES as FILE_TYPE_NAMES, SCHEMAS, DatasetError, ParseOptions
from studio.core.demo import DEMO_ROWS, demo_dataset
from studio.core.quality import FIXES
from studio.models import DatasetPublic, DatasetVersionPublic
from studio.services import datasets
from studio.services.context import NotFound, StudioContext
from studio.ui.forms import bind, spec_for
from studio.ui.text import notice, t

PAGE_ROWS = 20
CELL_CHARS = 400  # longer cells are shortened in the table; the edit form shows all
FILE_TYPES = list(FILE_TYPE_NAMES)  # .json .jsonl .ndjson .csv .tsv .parquet
TABLE_TYPES = ("csv", "tsv")  # files whose columns can be mapped
TABLE_COLUMNS = ["id", "name", "version", "rows", "kind", "file", "created"]
HISTORY_COLUMNS = ["version", "note", "rows", "hash", "created", "jobs"]
# 'custom' needs its own template text, which belongs to the Train tab's form
TEMPLATES = [n for n in get_args(TemplateSection.model_fields["name"].annotation) if n != "custom"]
MAX_LENGTH = spec_for("training.max_length", TrainingSection.model_fields["max_length"])
MAX_DELETE = 100_000  # indices one delete may name
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# The rows table: a click on a row opens it (event 'click'); a Ctrl-, Cmd- or Shift-click
# marks it for deletion or unmarks it (event 'select'). Handlers read evt.index.
ROWS_JS = """
element.addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-index]');
  if (!row) return;
  const index = Number(row.dataset.index);
  if (event.ctrlKey || event.metaKey || event.shiftKey) {
    row.classList.toggle('marked');
    trigger('select', {index: index});
  } else {
    element.querySelectorAll('tr.current').forEach((r) => r.classList.remove('current'));
    row.classList.add('current');
    trigger('click', {index: index});
  }
});
"""
ROWS_CSS = """
.rows-wrap { max-height: 520px; overflow: auto; border: 1px solid var(--border-color-primary); border-radius: 6px; }
table { width: 100%; border-collapse: collapse; font-size: var(--text-sm); margin: 0; }
th, td { border: none !important; border-bottom: 1px solid var(--border-color-primary) !important; padding: 6px 8px; }
th { position: sticky; top: 0; background: var(--background-fill-secondary); text-align: left; }
td { vertical-align: top; white-space: pre-wrap; word-break: break-word; }
td.index { color: var(--body-text-color-subdued); font-variant-numeric: tabular-nums; width: 3.5em; }
tr[data-index] { cursor: pointer; }
tr[data-index]:hover td { background: var(--background-fill-secondary); }
tr.current td { background: var(--color-accent-soft); }
tr.marked td { background: var(--error-background-fill); text-decoration: line-through; }
"""


@dataclass(frozen=True)
class DatasetsTab:
    """Handles other tabs use. `added` holds the id of the dataset added last in this
    session and changes whenever one is added; `changed` holds {"dataset_id",
    "version_id"} of the version saved last (an edit, a fix, a split, going back)."""

    added: gr.State
    changed: gr.State


# --- rendering (no service calls) -----------------------------------------------------


def dataset_choices(items: list[DatasetPublic]) -> list[tuple[str, int]]:
    """Dropdown choices (label, id), newest first."""
    return [(t("datasets.choice", name=d.name, id=d.id, rows=d.row_count), d.id) for d in items]


def datasets_frame(items: list[DatasetPublic]) -> pd.DataFrame:
    rows = [
        [d.id, d.name, d.version, d.row_count, d.kind, d.source_filename, f"{d.created_at:%Y-%m-%d %H:%M}"]
        for d in items
    ]
    return pd.DataFrame(rows, columns=[t(f"datasets.col.{c}") for c in TABLE_COLUMNS])


def cell_text(value: Any, limit: int | None = None) -> str:
    """A cell as plain text: chat turns one per line, other lists and objects as JSON."""
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        text = "\n".join(f"{m['role']}: {m.get('content', '')}" for m in value)
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = "" if value is None else str(value)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def field_text(value: Any) -> str:
    """A field as the edit form shows it: chat messages as indented JSON."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, indent=1)
    return "" if value is None else str(value)


def rows_table(page: datasets.RowPage) -> str:
    """A page of rows as an HTML table: each row's index first, then the dataset's
    columns. Every cell is escaped here, so HTML in the data shows as text. (An HTML
    table, not gr.Dataframe: Gradio 6.31's virtualized grid can keep showing the old rows
    when a page with fewer rows replaces one just drawn.)"""
    columns = page.columns or list(ALPACA_FIELDS)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [t("datasets.col.index"), *columns])
    body = "".join(
        f"<tr data-index='{item['index']}'><td class='index'>{item['index']}</td>"
        + "".join(f"<td>{html.escape(cell_text(item['row'].get(c), CELL_CHARS))}</td>" for c in columns)
        + "</tr>"
        for item in page.rows
    )
    return f"<div class='rows-wrap'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def page_label(page: datasets.RowPage, search: str, category: str) -> str:
    if not page.rows:
        key = "datasets.page_none_match" if (search or category) else "datasets.page_empty"
        return t(key, version=page.version, total=f"{page.total:,}")
    return t(
        "datasets.page", version=page.version, first=f"{page.offset + 1:,}",
        last=f"{page.offset + len(page.rows):,}", total=f"{page.total:,}",
    )


def category_dropdown(counts: dict[str, int], current: str | None) -> gr.Dropdown:
    """The category filter: hidden when the rows have no category column."""
    choices = [(t("datasets.all_categories"), "")] + [(f"{name} ({n:,})", name) for name, n in counts.items()]
    return gr.Dropdown(choices=choices, value=current if current in counts else "", visible=bool(counts))


def history_frame(versions: list[DatasetVersionPublic]) -> pd.DataFrame:
    rows = [
        [v.number, v.note, v.row_count, v.content_hash[:12], f"{v.created_at:%Y-%m-%d %H:%M:%S}", v.used_by_jobs]
        for v in versions
    ]
    return pd.DataFrame(rows, columns=[t(f"datasets.history.{c}") for c in HISTORY_COLUMNS])


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


def _md(value: Any) -> str:
    """User text made inert inside Markdown (a table cell): every ASCII punctuation mark
    backslash-quoted, so no tag, link or emphasis can start; newlines become spaces."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(str(value).split()))


def _examples(indices: list) -> str:
    """Example rows of a finding: '3, 9' or, for duplicate groups, '3 = 9 = 12; 5 = 7'."""
    if not indices:
        return ""
    if isinstance(indices[0], list):
        shown = "; ".join(" = ".join(str(i) for i in group[:4]) for group in indices[:5])
    else:
        shown = ", ".join(str(i) for i in indices[:10])
    return t("datasets.q.examples", rows=shown)


def report_markdown(report: dict[str, Any]) -> str:
    """The quality report's summary as Markdown; every string from the data is escaped."""
    tokens, cut = report["tokens"], report["truncated"]
    lines = [
        t("datasets.q.head", version=report["version"], rows=f"{report['rows']:,}", template=report["template"],
          max_length=f"{report['max_length']:,}", model=_md(report["base_model"]), seconds=report.get("seconds", 0)),
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
    markers = ", ".join(f"{_md(m)} × {n}" for m, n in leaks["markers"].items())
    line("datasets.q.markers", leaks["rows"], markers + _examples(leaks["examples"]))
    lines += ["", t("datasets.q.tokens", total=f"{tokens['total']:,}", trained=f"{tokens['trained']:,}",
                    mean=tokens["mean"], median=tokens["median"], max=f"{tokens['max']:,}")]
    categories = report.get("categories")
    if categories:
        total = max(1, report["rows"])
        balance = ", ".join(f"{_md(name)} {n:,} ({n / total:.0%})" for name, n in categories["counts"].items())
        lines += ["", t("datasets.q.categories", column=_md(categories["column"]), count=len(categories["counts"]),
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
    counts = t(
        "datasets.tp.counts", index=preview["index"], tokens=preview["tokens"], trained=preview["trained_tokens"],
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


def _refused(key: str, exc: Exception) -> str:
    """A service's refusal as a message listing every problem."""
    return notice("error", t(key), getattr(exc, "errors", None) or [str(exc)])


def _options(file_type: str | None, schema: str | None, mapping: tuple = ()) -> ParseOptions:
    columns = {target: source for target, source in zip(ALPACA_FIELDS, mapping) if source}
    return ParseOptions(file_type=file_type or None, schema=schema or None, columns=columns)


def _read(ctx: StudioContext, path: str) -> bytes:
    with open(path, "rb") as f:  # one byte over the limit is enough for the service to refuse
        return f.read(int(ctx.settings.max_upload_mb * 1e6) + 1)


# --- handlers: add a dataset ----------------------------------------------------------


def inspect_upload(ctx: StudioContext, path: str | None, file_type: str, schema: str):
    """After a file is chosen: what detection makes of it, a sample, and for a CSV/TSV
    the mapping dropdowns, preset to the columns named like the Alpaca fields.
    Returns (inspection box, mapping row, 3 mapping dropdowns, columns text, sample, message)."""
    unmapped = gr.Dropdown(choices=[(t("datasets.map_none"), "")], value="")
    hidden = (gr.Column(visible=False), gr.Row(visible=False), unmapped, unmapped, unmapped, "", None)
    if not path:
        return *hidden, ""
    try:
        found = datasets.inspect_file(ctx, Path(path).name, _read(ctx, path), _options(file_type, schema))
    except DatasetError as exc:
        return *hidden, _refused("datasets.inspect_refused", exc)
    table = found.file_type in TABLE_TYPES
    choices = [(t("datasets.map_none"), "")] + [(c, c) for c in found.columns]
    mapping = [gr.Dropdown(choices=choices, value=f if table and f in found.columns else "") for f in ALPACA_FIELDS]
    names = ", ".join(_md(c) for c in found.columns) or "-"
    columns = t("datasets.detected", type=found.file_type, schema=found.schema, columns=names)
    return gr.Column(visible=True), gr.Row(visible=table), *mapping, columns, _sample(found), _inspection_notice(found)


def check_mapping(ctx: StudioContext, path: str | None, file_type: str, schema: str, *mapping: str):
    """After the user changes the mapping: the sample and problems under it. Returns
    (sample, message)."""
    if not path:
        return None, ""
    try:
        found = datasets.inspect_file(ctx, Path(path).name, _read(ctx, path), _options(file_type, schema, mapping))
    except DatasetError as exc:
        return None, _refused("datasets.inspect_refused", exc)
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
    ctx: StudioContext, path: str | None, name: str, accept_partial: bool, file_type: str, schema: str, *mapping: str
):
    """Store an uploaded file as a dataset; returns (message, added id or skip)."""
    if not path:
        return notice("error", t("datasets.no_file")), gr.skip()
    return _store(ctx, Path(path).name, _read(ctx, path), name, accept_partial, _options(file_type, schema, mapping))


def add_demo(ctx: StudioContext):
    """Store all the demo rows as a dataset, exactly as if they were an uploaded JSONL file."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in demo_dataset()).encode()
    return _store(ctx, "demo.jsonl", data, t("datasets.demo_name"), False, None)


def _store(ctx: StudioContext, filename: str, data: bytes, name: str, accept_partial: bool, options: ParseOptions | None):
    try:
        dataset, skipped = datasets.create_dataset(ctx, filename, data, name, accept_partial, options)
    except DatasetError as exc:
        return _refused("datasets.refused", exc), gr.skip()
    title = t("datasets.added", name=dataset.name, id=dataset.id, rows=f"{dataset.row_count:,}", file=filename)
    if skipped:
        title += " " + t("datasets.skipped", count=len(skipped))
    return notice("ok", title, skipped), dataset.id


# --- handlers: the datasets list and the rows ----------------------------------------


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


def reset_filters(ctx: StudioContext, dataset_id: int | None):
    """A newly picked dataset: its categories, an empty search. Returns (category, search)."""
    try:
        counts = datasets.category_counts(ctx, dataset_id) if dataset_id is not None else {}
    except NotFound:
        counts = {}
    return category_dropdown(counts, ""), ""


def refresh_categories(ctx: StudioContext, dataset_id: int | None, current: str):
    """The category filter after a change, keeping the chosen category while it exists."""
    try:
        counts = datasets.category_counts(ctx, dataset_id) if dataset_id is not None else {}
    except NotFound:
        counts = {}
    return category_dropdown(counts, current)


def show_page(ctx: StudioContext, dataset_id: int | None, search: str, category: str, offset: int):
    """One page of the rows that match, from offset. Returns (table, view, label); the
    view ({"dataset_id", "version_id", "version", "kind", "columns", "offset", "total"})
    is what edits, deletes, splits and exports work on."""
    if dataset_id is None:
        return "", None, t("datasets.no_dataset")
    try:
        page = datasets.page_rows(ctx, dataset_id, max(0, offset), PAGE_ROWS, search or "", category or None)
    except NotFound as exc:
        return "", None, str(exc)
    view = {
        "dataset_id": dataset_id, "version_id": page.version_id, "version": page.version,
        "kind": "chat" if page.columns[:1] == ["messages"] else "alpaca", "columns": page.columns,
        "offset": page.offset, "total": page.total,
    }
    return rows_table(page), view, page_label(page, search, category)


def first_page(ctx: StudioContext, dataset_id: int | None, search: str, category: str):
    return show_page(ctx, dataset_id, search, category, 0)


def next_page(ctx: StudioContext, dataset_id: int | None, search: str, category: str, view: dict | None):
    offset = (view or {}).get("offset", 0) + PAGE_ROWS
    if view and offset >= view["total"]:
        return gr.skip(), gr.skip(), gr.skip()
    return show_page(ctx, dataset_id, search, category, offset)


def previous_page(ctx: StudioContext, dataset_id: int | None, search: str, category: str, view: dict | None):
    return show_page(ctx, dataset_id, search, category, max(0, (view or {}).get("offset", 0) - PAGE_ROWS))


def same_page(ctx: StudioContext, dataset_id: int | None, search: str, category: str, view: dict | None):
    """The page shown, reloaded after a change."""
    return show_page(ctx, dataset_id, search, category, (view or {}).get("offset", 0))


def add_row_form(view: dict | None):
    """The add-row fields for the dataset's row shape: Alpaca fields, or chat messages."""
    chat = (view or {}).get("kind") == "chat"
    return *[gr.Textbox(visible=not chat)] * 4, gr.Textbox(visible=chat)


def pick_table_row(evt: gr.EventData):
    """A clicked row's index, for the edit form and the token preview."""
    index = int(evt.index)
    return index, index


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


# --- handlers: edit, add, delete ------------------------------------------------------


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
    return gr.skip(), *_row_form(dataset_id, page, field)


def reload_row(ctx: StudioContext, changed: dict | None, editing: dict | None, field: str | None):
    """The open edit form after a new version: the same row in the newest version. After a
    delete the form follows its row to its new index, and closes if the row was deleted."""
    if not editing:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    index = editing["index"]
    deleted = (changed or {}).get("deleted", [])
    if index in deleted:
        return gr.skip(), None, gr.Dropdown(choices=[], value=None), "", None
    index -= sum(1 for i in deleted if i < index)
    try:
        page = datasets.page_rows(ctx, editing["dataset_id"], index, 1)
    except NotFound:
        page = None
    if page is None or not page.rows:  # gone (e.g. a quality fix dropped it)
        return gr.skip(), None, gr.Dropdown(choices=[], value=None), "", None
    return gr.skip(), *_row_form(editing["dataset_id"], page, field)


def _row_form(dataset_id: int, page: datasets.RowPage, field: str | None):
    item = page.rows[0]
    row = item["row"]
    editing = {"dataset_id": dataset_id, "version_id": page.version_id, "version": page.version,
               "index": item["index"], "row": row}
    fields = list(dict.fromkeys([*(f for f in page.columns if f in row or f in ALPACA_FIELDS), *row]))
    if field not in fields:
        field = "messages" if "messages" in row else "output"
    dropdown = gr.Dropdown(choices=fields, value=field, label=t("datasets.edit_field_of", index=item["index"], version=page.version))
    return editing, dropdown, field_text(row.get(field)), row


def show_field(editing: dict | None, field: str | None) -> str:
    """The value of the chosen field of the row in the form (no service call)."""
    return field_text((editing or {}).get("row", {}).get(field)) if field else ""


def save_cell(ctx: StudioContext, editing: dict | None, field: str | None, value: str):
    """Save the edited field as a new version. Returns (message, changed)."""
    if not editing:
        return notice("error", t("datasets.pick_row")), gr.skip()
    try:
        saved = datasets.edit_cell(ctx, editing["dataset_id"], editing["index"], field or "", value or "", editing["version_id"])
    except (DatasetError, NotFound) as exc:
        return _refused("datasets.change_refused", exc), gr.skip()
    return _saved(saved, editing["version_id"])


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
        return notice("error", t("datasets.change_refused"), [t("datasets.bad_messages", error=f"{exc.msg} at column {exc.colno}")]), gr.skip()
    except ValueError as exc:
        return notice("error", t("datasets.change_refused"), [str(exc)]), gr.skip()
    try:
        saved = datasets.add_row(ctx, view["dataset_id"], row, view["version_id"])
    except (DatasetError, NotFound) as exc:
        return _refused("datasets.change_refused", exc), gr.skip()
    return _saved(saved, view["version_id"])


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
        return _refused("datasets.change_refused", exc), gr.skip(), gr.skip()
    message, changed = _saved(saved, view["version_id"])
    if isinstance(changed, dict):
        changed["deleted"] = indices  # the open edit form follows its row (reload_row)
    return message, changed, ""


def _saved(saved: DatasetPublic, base_version_id: int | None):
    """(message, changed) after a change: the history announces a new version; a change
    that left the rows as they were makes none."""
    if saved.version_id == base_version_id:
        return notice("ok", t("datasets.unchanged", version=saved.version)), gr.skip()
    return gr.skip(), {"dataset_id": saved.id, "version_id": saved.version_id}


# --- handlers: versions and export ----------------------------------------------------


def show_history(ctx: StudioContext, dataset_id: int | None):
    """The version history and the 'go back to' choices. Returns (table, dropdown)."""
    if dataset_id is None:
        return None, gr.Dropdown(choices=[], value=None)
    try:
        versions = datasets.list_versions(ctx, dataset_id)
    except NotFound:
        return None, gr.Dropdown(choices=[], value=None)
    return history_frame(versions), _revert_choices(versions)


def announce_version(ctx: StudioContext, changed: dict | None):
    """After a change: 'version N saved: <note>', and the history with it first.
    Returns (message, table, dropdown)."""
    if not changed:
        return gr.skip(), gr.skip(), gr.skip()
    versions = datasets.list_versions(ctx, changed["dataset_id"])
    saved = next((v for v in versions if v.id == changed["version_id"]), versions[0])
    message = notice("ok", t("datasets.saved", version=saved.number, note=saved.note, rows=f"{saved.row_count:,}"))
    return message, history_frame(versions), _revert_choices(versions)


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
        return _refused("datasets.change_refused", exc), gr.skip()
    return _saved(saved, None)


def export(ctx: StudioContext, view: dict | None, fmt: str):
    """The version shown as a file to download. Returns (message, file)."""
    if not view:
        return notice("error", t("datasets.no_dataset")), None
    try:
        filename, data, _ = datasets.export_version(ctx, view["dataset_id"], fmt, view["version_id"])
    except (DatasetError, NotFound) as exc:
        return _refused("datasets.export_refused", exc), None
    path = _export_folder() / filename
    path.write_bytes(data)
    return notice("ok", t("datasets.exported", file=filename, version=view["version"])), gr.File(value=str(path), visible=True)


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


# --- handlers: split, quality report, token preview -----------------------------------


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
        return _refused("datasets.change_refused", exc), gr.skip()
    return _saved(saved, view["version_id"])


def run_report(ctx: StudioContext, dataset_id: int | None, base_model: str, template: str, max_length: float | None):
    """The quality report of the newest version. Returns (message, summary, length plot,
    category plot, report state, one visibility per fix button)."""
    nothing = (None, None, None, *[gr.Button(visible=False)] * len(FIXES))
    if dataset_id is None:
        return notice("error", t("datasets.no_dataset")), "", *nothing
    if max_length is None:
        return notice("error", t("datasets.q.refused"), [t("datasets.max_length_missing")]), "", *nothing
    try:
        report = datasets.quality_report(ctx, dataset_id, (base_model or "").strip(), TemplateSection(name=template or "alpaca"), int(max_length))
    except (DatasetError, NotFound) as exc:
        return _refused("datasets.q.refused", exc), "", *nothing
    state = {"dataset_id": dataset_id, "version_id": report["version_id"]}
    buttons = [gr.Button(visible=fix in report["fixes"]) for fix in FIXES]
    return "", report_markdown(report), figure(report, "lengths"), figure(report, "categories"), state, *buttons


def apply_quality_fix(ctx: StudioContext, fix: str, report: dict | None):
    """One of the report's fixes, on the version the report is of. Returns (message, changed)."""
    if not report:
        return notice("error", t("datasets.q.run_first")), gr.skip()
    try:
        saved = datasets.apply_fix(ctx, report["dataset_id"], fix, report["version_id"])
    except (DatasetError, NotFound) as exc:
        return _refused("datasets.change_refused", exc), gr.skip()
    return _saved(saved, report["version_id"])


def preview(ctx: StudioContext, dataset_id: int | None, index: float | None, base_model: str, template: str, max_length: float | None) -> str:
    """One row of the newest version as the model sees it, as HTML."""
    if dataset_id is None or index is None or index < 0 or max_length is None:
        return notice("error", t("datasets.tp.pick"))
    try:
        row = datasets.preview_row(ctx, dataset_id, int(index), (base_model or "").strip(), TemplateSection(name=template or "alpaca"), int(max_length))
    except (DatasetError, NotFound) as exc:
        return _refused("datasets.tp.refused", exc)
    return preview_html(row)


# --- layout ---------------------------------------------------------------------------


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


@dataclass(frozen=True)
class RowsPanel:
    search: gr.Textbox
    category: gr.Dropdown
    label: gr.Markdown
    prev: gr.Button
    next: gr.Button
    table: gr.HTML
    index: gr.Number
    load: gr.Button
    field: gr.Dropdown
    value: gr.Textbox
    row: gr.JSON
    save: gr.Button
    add_fields: list[gr.Textbox]  # instruction, input, output, extra lines, messages
    add: gr.Button
    delete_panel: gr.Accordion
    delete_text: gr.Textbox
    delete: gr.Button


def rows_panel() -> RowsPanel:
    with gr.Row(equal_height=True):
        search = gr.Textbox(label=t("datasets.search"), placeholder=t("datasets.search_placeholder"), max_length=200,
                            scale=3, elem_id="rows-search")
        category = gr.Dropdown(label=t("datasets.category"), choices=[(t("datasets.all_categories"), "")], value="",
                               visible=False, scale=2,
                               elem_id="rows-category")
    with gr.Row(equal_height=True):
        label = gr.Markdown(elem_id="rows-page")
        prev = gr.Button(t("datasets.prev"), size="sm", scale=0, min_width=140, elem_id="preview-prev")
        next_ = gr.Button(t("datasets.next"), size="sm", scale=0, min_width=140, elem_id="preview-next")
    table = gr.HTML(css_template=ROWS_CSS, js_on_load=ROWS_JS, elem_id="preview-table")
    with gr.Accordion(t("datasets.edit_title"), open=True, elem_id="edit-panel"):
        with gr.Row(equal_height=True):
            index = gr.Number(label=t("datasets.row_index"), info=t("datasets.row_index_info"), precision=0, minimum=0,
                              scale=1, elem_id="edit-index")
            load = gr.Button(t("datasets.load_row"), size="sm", scale=0, min_width=120, elem_id="edit-load")
            field = gr.Dropdown(label=t("datasets.edit_field"), choices=[], allow_custom_value=True, scale=2,
                                elem_id="edit-field")
        value = gr.Textbox(label=t("datasets.edit_value"), lines=3, max_lines=20, elem_id="edit-value")
        save = gr.Button(t("datasets.save"), variant="primary", elem_id="edit-save")
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
    with gr.Accordion(t("datasets.delete_title"), open=False, elem_id="delete-panel") as delete_panel:
        with gr.Row(equal_height=True):
            delete_text = gr.Textbox(label=t("datasets.delete_rows"), placeholder="3, 7-9", scale=3, elem_id="delete-rows")
            delete = gr.Button(t("datasets.delete"), variant="stop", scale=1, elem_id="delete-btn")
    return RowsPanel(search, category, label, prev, next_, table, index, load, field, value, row, save, add_fields, add,
                     delete_panel, delete_text, delete)


@dataclass(frozen=True)
class VersionsPanel:
    table: gr.Dataframe
    choice: gr.Dropdown
    revert: gr.Button
    fmt: gr.Radio
    export: gr.Button
    file: gr.File


def versions_panel() -> VersionsPanel:
    table = gr.Dataframe(interactive=False, wrap=True, max_height=320, elem_id="versions-table")
    with gr.Row(equal_height=True):
        choice = gr.Dropdown(label=t("datasets.revert_select"), choices=[], scale=3, elem_id="revert-select")
        revert_btn = gr.Button(t("datasets.revert"), scale=1, elem_id="revert-btn")
    gr.Markdown(t("datasets.export_title"))
    with gr.Row(equal_height=True):
        fmt = gr.Radio(choices=[("JSONL", "jsonl"), ("CSV", "csv")], value="jsonl", label=t("datasets.export_format"),
                       info=t("datasets.export_info"), scale=2, elem_id="export-format")
        export_btn = gr.Button(t("datasets.export"), scale=1, elem_id="export-btn")
    file = gr.File(label=t("datasets.export_file"), visible=False, interactive=False, elem_id="export-file")
    return VersionsPanel(table, choice, revert_btn, fmt, export_btn, file)


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
        template = gr.Dropdown(choices=TEMPLATES, value=TemplateSection().name, label=t("datasets.q.template"),
                               elem_id="quality-template")
        max_length = gr.Number(value=MAX_LENGTH.default, minimum=MAX_LENGTH.minimum, maximum=MAX_LENGTH.maximum,
                               precision=0, label=t("datasets.q.max_length"), info=MAX_LENGTH.description,
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


@dataclass(frozen=True)
class SplitPanel:
    fraction: gr.Number
    seed: gr.Number
    by_column: gr.Dropdown
    stratify: gr.Dropdown
    run: gr.Button


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
    return SplitPanel(fraction, seed, by_column, stratify, run)


def build(ctx: StudioContext, page: gr.Blocks) -> DatasetsTab:
    """Render the tab inside the current gr.Tab and wire it."""
    added, changed, view, editing = gr.State(None), gr.State(None), gr.State(None), gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            upload = upload_panel()
        with gr.Column(scale=2):
            gr.Markdown(t("datasets.list_title"))
            table = gr.Dataframe(interactive=False, max_height=260, elem_id="datasets-table")
            selected = gr.Dropdown(label=t("datasets.preview_select"), elem_id="preview-select")
    change_message = gr.HTML(elem_id="dataset-change-message")
    with gr.Tabs():
        with gr.Tab(t("datasets.tab.rows"), id="dataset-rows", elem_id="dataset-tab-rows"):
            rows = rows_panel()
        with gr.Tab(t("datasets.tab.versions"), id="dataset-versions", elem_id="dataset-tab-versions"):
            versions = versions_panel()
        with gr.Tab(t("datasets.tab.quality"), id="dataset-quality", elem_id="dataset-tab-quality"):
            quality = quality_panel()
        with gr.Tab(t("datasets.tab.split"), id="dataset-split", elem_id="dataset-tab-split"):
            splitting = split_panel()

    # Add a dataset.
    inspect_out = [upload.inspection, upload.mapping_row, *upload.mapping, upload.columns, upload.sample, upload.message]
    gr.on([upload.file.change, upload.file_type.input, upload.schema.input], bind(inspect_upload, ctx),
          [upload.file, upload.file_type, upload.schema], inspect_out)
    gr.on([d.input for d in upload.mapping], bind(check_mapping, ctx),
          [upload.file, upload.file_type, upload.schema, *upload.mapping], [upload.sample, upload.message])
    upload.add.click(bind(add_file, ctx),
                     [upload.file, upload.name, upload.partial, upload.file_type, upload.schema, *upload.mapping],
                     [upload.message, added])
    upload.demo.click(bind(add_demo, ctx), None, [upload.message, added])

    # Pick a dataset: its filters, first page and history.
    gr.on([page.load, added.change], bind(show_datasets, ctx), [added], [table, selected], show_progress="hidden")
    table.select(pick_dataset_row, None, selected)
    page_in, page_out = [selected, rows.search, rows.category], [rows.table, view, rows.label]
    selected.change(bind(reset_filters, ctx), [selected], [rows.category, rows.search]).then(
        bind(first_page, ctx), page_in, page_out)
    selected.change(bind(show_history, ctx), [selected], [versions.table, versions.choice])
    gr.on([rows.search.submit, rows.category.input], bind(first_page, ctx), page_in, page_out)
    rows.prev.click(bind(previous_page, ctx), [*page_in, view], page_out)
    rows.next.click(bind(next_page, ctx), [*page_in, view], page_out)
    view.change(column_choices, [view], [splitting.by_column, splitting.stratify], show_progress="hidden")
    view.change(add_row_form, [view], rows.add_fields, show_progress="hidden")

    # Edit, add, delete; every change reports the new version in `changed`.
    form_out = [change_message, editing, rows.field, rows.value, rows.row]
    rows.table.click(pick_table_row, None, [rows.index, quality.preview_index]).then(
        bind(load_row, ctx), [selected, rows.index, rows.field], form_out)
    gr.on([rows.load.click, rows.index.submit], bind(load_row, ctx), [selected, rows.index, rows.field], form_out)
    rows.field.input(show_field, [editing, rows.field], rows.value)
    changes = [change_message, changed]
    rows.save.click(bind(save_cell, ctx), [editing, rows.field, rows.value], changes)
    rows.add.click(bind(add_new_row, ctx), [view, *rows.add_fields], changes)
    rows.delete.click(bind(delete_selected, ctx), [view, rows.delete_text], [*changes, rows.delete_text])
    rows.table.select(mark_table_row, rows.delete_text, [rows.delete_text, rows.delete_panel], show_progress="hidden")
    versions.revert.click(bind(revert, ctx), [selected, versions.choice], changes)
    splitting.run.click(bind(split, ctx), [view, splitting.fraction, splitting.seed, splitting.by_column,
                                           splitting.stratify], changes)
    versions.export.click(bind(export, ctx), [view, versions.fmt], [change_message, versions.file])

    # Quality report, its fixes (each re-runs the report on the new version), token preview.
    report_in = [selected, quality.base_model, quality.template, quality.max_length]
    report_out = [quality.message, quality.summary, quality.lengths, quality.categories, quality.report, *quality.fixes]
    quality.run.click(bind(run_report, ctx), report_in, report_out)
    for fix, button in zip(FIXES, quality.fixes):
        button.click(bind(apply_quality_fix, ctx, fix), [quality.report], changes).then(
            bind(run_report, ctx), report_in, report_out)
    quality.preview.click(bind(preview, ctx), [selected, quality.preview_index, quality.base_model, quality.template,
                                               quality.max_length], quality.preview_html)

    # After any change: announce it, reload what shows the dataset.
    changed.change(bind(announce_version, ctx), [changed], [change_message, versions.table, versions.choice])
    changed.change(bind(same_page, ctx), [*page_in, view], page_out)
    changed.change(bind(refresh_categories, ctx), [selected, rows.category], rows.category)
    changed.change(bind(reload_row, ctx), [changed, editing, rows.field], form_out)
    changed.change(bind(refresh_datasets, ctx), None, [table, selected], show_progress="hidden")
    return DatasetsTab(added=added, changed=changed)
