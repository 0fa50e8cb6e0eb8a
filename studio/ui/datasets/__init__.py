"""Datasets tab: add a dataset (upload with overrides and a column mapping, or the demo
rows), then work on one: browse and search its rows, edit / add / delete rows, go back to
an older version, export, split, read its quality report and see one row as the model
sees it. One module per panel; this one lays them out and wires them.

Handlers take the StudioContext first (bound in `build`), then the controls' values, make
one service call (studio.services.datasets) and return updates. Every change makes a new
version; a change handler only reports the new version in the `changed` state, and the
refreshes hang off that state's change event (the history announces "version N saved:
<note>", the table, the filters, the edit form and the datasets list reload).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.core.quality import FIXES
from studio.services.context import StudioContext
from studio.ui.datasets import edit, listing, messages, quality, rows, split, upload, versions
from studio.ui.datasets.listing import dataset_choices
from studio.ui.forms import bind
from studio.ui.text import t

__all__ = ["DatasetsTab", "build", "dataset_choices", "follow_training"]


@dataclass(frozen=True)
class DatasetsTab:
    """Handles other tabs use. `added` holds the id of the dataset added last in this
    session and changes whenever one is added; `changed` holds {"dataset_id",
    "version_id"} of the version saved last (an edit, a fix, a split, going back).
    `report_settings` are the quality report's base model, template and max length
    boxes, which follow_training keeps in step with the Train tab."""

    added: gr.State
    changed: gr.State
    report_settings: tuple[gr.Textbox, gr.Dropdown, gr.Number]


def build(ctx: StudioContext, page: gr.Blocks) -> DatasetsTab:
    """Render the tab inside the current gr.Tab and wire it."""
    added, changed, view, editing = gr.State(None), gr.State(None), gr.State(None), gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            up = upload.upload_panel()
        with gr.Column(scale=2):
            gr.Markdown(t("datasets.list_title"))
            table = gr.Dataframe(interactive=False, max_height=260, elem_id="datasets-table")
            selected = gr.Dropdown(label=t("datasets.preview_select"), elem_id="preview-select")
            status = gr.Markdown(elem_id="dataset-status")
    with gr.Tabs():
        with gr.Tab(t("datasets.tab.rows"), id="dataset-rows", elem_id="dataset-tab-rows"):
            browse = rows.rows_panel()
            form = edit.edit_panel()
        with gr.Tab(t("datasets.tab.versions"), id="dataset-versions", elem_id="dataset-tab-versions"):
            history = versions.versions_panel()
        with gr.Tab(t("datasets.tab.quality"), id="dataset-quality", elem_id="dataset-tab-quality"):
            report = quality.quality_panel()
        with gr.Tab(t("datasets.tab.split"), id="dataset-split", elem_id="dataset-tab-split"):
            splitting = split.split_panel()

    # Add a dataset; a stored file empties the drop box.
    inspect_out = [up.inspection, up.mapping_row, *up.mapping, up.columns, up.sample, up.message]
    gr.on([up.file.change, up.file_type.input, up.schema.input], bind(upload.inspect_upload, ctx),
          [up.file, up.file_type, up.schema], inspect_out)
    gr.on([d.input for d in up.mapping], bind(upload.check_mapping, ctx),
          [up.file, up.file_type, up.schema, *up.mapping], [up.sample, up.message])
    up.add.click(bind(upload.add_file, ctx), [up.file, up.name, up.partial, up.file_type, up.schema, *up.mapping],
                 [up.message, added, up.file])
    up.demo.click(bind(upload.add_demo, ctx), None, [up.message, added])

    # Pick a dataset: every panel follows it. Its filters, first page, history and status
    # load; the forms, messages, report and preview of the last one are emptied.
    gr.on([page.load, added.change], bind(listing.show_datasets, ctx), [added], [table, selected], show_progress="hidden")
    table.select(listing.pick_dataset_row, None, selected)
    page_in, page_out = [selected, browse.search, browse.category], [browse.table, view, browse.label]
    # The emptying comes first in the chain, so nothing of the last dataset can land
    # after the new one's first page (a report of it, say, run in between).
    report_out = [report.message, report.summary, report.lengths, report.categories, report.report, *report.fixes]
    forgotten = [form.message, editing, form.field, form.value, form.row, form.index, form.delete_text,
                 form.add_message, form.delete_message, *report_out, report.preview_html, report.preview_index,
                 history.revert_message, history.export_message, history.file, splitting.message]
    selected.change(forget_last_dataset, None, forgotten, show_progress="hidden").then(
        bind(rows.reset_filters, ctx), [selected], [browse.category, browse.search]).then(
        bind(rows.first_page, ctx), page_in, page_out)
    selected.change(bind(versions.show_history, ctx), [selected], [history.table, history.choice])
    selected.change(bind(versions.describe, ctx), [selected], status, show_progress="hidden")
    gr.on([browse.search.submit, browse.category.input], bind(rows.first_page, ctx), page_in, page_out)
    browse.prev.click(bind(rows.previous_page, ctx), [*page_in, view], page_out)
    browse.next.click(bind(rows.next_page, ctx), [*page_in, view], page_out)
    view.change(split.column_choices, [view], [splitting.by_column, splitting.stratify], show_progress="hidden")
    view.change(edit.add_row_form, [view], form.add_fields, show_progress="hidden")

    # Edit, add, delete; every change reports the new version in `changed`, and what went
    # wrong next to the button pressed.
    form_out = [form.message, editing, form.field, form.value, form.row]
    browse.table.click(rows.pick_table_row, None, [form.index, report.preview_index]).then(
        bind(edit.load_row, ctx), [selected, form.index, form.field], form_out)
    gr.on([form.load.click, form.index.submit], bind(edit.load_row, ctx), [selected, form.index, form.field], form_out)
    form.field.input(edit.show_field, [editing, form.field], form.value)
    form.save.click(bind(edit.save_cell, ctx), [selected, editing, form.field, form.value], [form.message, changed])
    form.add.click(bind(edit.add_new_row, ctx), [view, *form.add_fields], [form.add_message, changed])
    form.delete.click(bind(edit.delete_selected, ctx), [view, form.delete_text],
                      [form.delete_message, changed, form.delete_text])
    browse.table.select(edit.mark_table_row, form.delete_text, [form.delete_text, form.delete_panel], show_progress="hidden")
    history.revert.click(bind(versions.revert, ctx), [selected, history.choice], [history.revert_message, changed])
    splitting.run.click(bind(split.split, ctx), [view, splitting.fraction, splitting.seed, splitting.by_column,
                                                 splitting.stratify], [splitting.message, changed])
    history.export.click(bind(versions.export, ctx), [view, history.fmt], [history.export_message, history.file])

    # Quality report, its fixes (each re-runs the report on the new version), token preview.
    report_in = [selected, report.base_model, report.template, report.max_length]
    report.run.click(bind(quality.run_report, ctx), report_in, report_out)
    for fix, button in zip(FIXES, report.fixes):
        button.click(bind(quality.apply_quality_fix, ctx, fix), [report.report], [report.message, changed]).then(
            bind(quality.run_report, ctx), report_in, report_out)
    report.preview.click(bind(quality.preview, ctx), [selected, report.preview_index, report.base_model,
                                                      report.template, report.max_length], report.preview_html)

    # After any change: announce it (a toast and the status line), reload what shows the dataset.
    changed.change(bind(versions.announce_version, ctx), [changed], [status, history.table, history.choice])
    changed.change(bind(rows.same_page, ctx), [*page_in, view], page_out)
    changed.change(bind(rows.refresh_categories, ctx), [selected, browse.category], browse.category)
    changed.change(bind(edit.reload_row, ctx), [changed, editing, form.field], [*form_out, form.index])
    changed.change(bind(listing.refresh_datasets, ctx), None, [table, selected], show_progress="hidden")
    return DatasetsTab(added=added, changed=changed,
                       report_settings=(report.base_model, report.template, report.max_length))


def forget_last_dataset():
    """Another dataset was picked: the edit forms, the report and token preview, the
    download and every message of the last one are emptied."""
    return *edit.clear_form(), *quality.clear_report(), *versions.clear_versions(), messages.cleared()


def follow_training(tab: DatasetsTab, base_model: gr.Component, template: gr.Component, max_length: gr.Component) -> None:
    """Keep the quality report's base model, template and max length equal to the Train
    tab's controls, so the report checks the cutoff training will use. Call inside the
    Blocks, after both tabs are built."""
    copies = (quality.copy_setting, quality.copy_template, quality.copy_setting)
    for source, target, copy in zip((base_model, template, max_length), tab.report_settings, copies):
        source.change(copy, source, target, show_progress="hidden")
