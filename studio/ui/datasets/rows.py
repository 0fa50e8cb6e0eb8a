"""Browse the rows of the newest version: search, category filter, pages. The `view` state it
keeps (the page shown) is what edits, deletes, splits and exports work on."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from studio.core.datasets import ALPACA_FIELDS
from studio.services import datasets
from studio.services.context import NotFound, StudioContext
from studio.ui.datasets.cells import CELL_CHARS, cell_text, inert_markdown
from studio.ui.text import t

PAGE_ROWS = 20
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


def page_label(name: str, page: datasets.RowPage, search: str, category: str) -> str:
    """'**qa**, version 2 · rows 1–20 of 30': which dataset and version the table shows."""
    name = inert_markdown(name)
    if not page.rows:
        key = "datasets.page_none_match" if (search or category) else "datasets.page_empty"
        return t(key, name=name, version=page.version, total=f"{page.total:,}")
    return t(
        "datasets.page", name=name, version=page.version, first=f"{page.offset + 1:,}",
        last=f"{page.offset + len(page.rows):,}", total=f"{page.total:,}",
    )


def category_dropdown(counts: dict[str, int], current: str | None) -> gr.Dropdown:
    """The category filter: hidden when the rows have no category column."""
    choices = [(t("datasets.all_categories"), "")] + [(f"{name} ({n:,})", name) for name, n in counts.items()]
    return gr.Dropdown(choices=choices, value=current if current in counts else "", visible=bool(counts))


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
    view ({"dataset_id", "name", "version_id", "version", "kind", "columns", "offset",
    "total"}) is what edits, deletes, splits and exports work on."""
    if dataset_id is None:
        return "", None, t("datasets.no_dataset")
    try:
        name = datasets.get_dataset(ctx, dataset_id).name
        page = datasets.page_rows(ctx, dataset_id, max(0, offset), PAGE_ROWS, search or "", category or None)
    except NotFound as exc:
        return "", None, str(exc)
    view = {
        "dataset_id": dataset_id, "name": name, "version_id": page.version_id, "version": page.version,
        "kind": "chat" if page.columns[:1] == ["messages"] else "alpaca", "columns": page.columns,
        "offset": page.offset, "total": page.total,
    }
    return rows_table(page), view, page_label(name, page, search, category)


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


def pick_table_row(evt: gr.EventData):
    """A clicked row's index, for the edit form and the token preview."""
    index = int(evt.index)
    return index, index


@dataclass(frozen=True)
class RowsPanel:
    search: gr.Textbox
    category: gr.Dropdown
    label: gr.Markdown
    prev: gr.Button
    next: gr.Button
    table: gr.HTML


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
    return RowsPanel(search, category, label, prev, next_, table)
