"""The Datasets tab's handlers against the real dataset services on a real SQLite file:
upload with a column mapping, paging / search / category filter, edits that make
versions (and a stale edit refused), add / delete, history and going back, export,
split, the quality report with its fixes, and the token preview. The browser test
(tests/e2e/test_datasets_browser.py) drives the same handlers through the page."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import pytest

from studio.core.demo import DEMO_ROWS
from studio.core.quality import FIXES
from studio.services import datasets
from studio.ui.datasets import edit, listing, quality, upload, versions
from studio.ui.datasets import rows as browsing
from studio.ui.datasets import split as splitting
from studio.ui.text import t

XSS = '<img src=x onerror="window.__xss=1">'


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def qa_rows(n: int = 30) -> list[dict]:
    """Question/answer rows in two categories, with two exact duplicates at the end."""
    rows = [{"question": f"What is {i} plus {i}?", "context": "", "answer": str(2 * i),
             "category": "even" if i % 2 == 0 else "odd"} for i in range(n - 2)]
    return rows + [dict(rows[0]), dict(rows[1])]


class TableReader(HTMLParser):
    """The header and body cells of the rows table, unescaped, as the browser shows them."""

    def __init__(self, markup: str):
        super().__init__()
        self.headers: list[str] = []
        self.rows: list[list[str]] = []
        self.indices: list[int] = []
        self._cell: list[str] | None = None
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        if tag == "tr" and dict(attrs).get("data-index") is not None:
            self.indices.append(int(dict(attrs)["data-index"]))
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            (self.rows[-1] if tag == "td" else self.headers).append("".join(self._cell))
            self._cell = None


def added_id(result) -> int:
    message, dataset_id, *_ = result
    assert "notice-ok" in message, message
    return dataset_id


@pytest.fixture
def qa_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "qa.csv", qa_rows())


@pytest.fixture
def qa_dataset(ctx, qa_csv) -> int:
    return added_id(upload.add_file(ctx, str(qa_csv), "qa", False, "", "", "question", "context", "answer"))


def view_of(ctx, dataset_id: int, search: str = "", category: str = "") -> dict:
    _, view, _ = browsing.first_page(ctx, dataset_id, search, category)
    return view


def announced(ctx, result) -> tuple[str, dict]:
    """The message a change ends with: the history's 'version N saved: note'."""
    message, changed = result
    assert isinstance(changed, dict), message
    note, _, _ = versions.announce_version(ctx, changed)
    return note, changed


# --- upload ---------------------------------------------------------------------------


def test_a_csv_needing_a_mapping_is_inspected_then_stored_with_it(ctx, qa_csv):
    box, mapping_row, *out = upload.inspect_upload(ctx, str(qa_csv), "", "")
    drop_i, drop_in, drop_out, columns, sample, message = out
    assert box.visible and mapping_row.visible
    assert [c[1] for c in drop_i.choices] == ["", "question", "context", "answer", "category"]
    # guessed from the names, shown, and the sample read with the guess
    assert (drop_i.value, drop_in.value, drop_out.value) == ("question", "context", "answer")
    assert "question, context, answer, category" in columns
    assert "question → instruction, context → input, answer → output" in columns
    assert list(sample.columns)[:3] == ["instruction", "input", "output"] and "notice-ok" in message

    sample, message = upload.check_mapping(ctx, str(qa_csv), "", "", "", "", "")  # the user unmaps them all
    assert sample is None and "missing column" in message and "notice-error" in message

    sample, message = upload.check_mapping(ctx, str(qa_csv), "", "", "question", "context", "answer")
    assert list(sample.columns)[:3] == ["instruction", "input", "output"]
    assert sample.iloc[0]["instruction"] == "What is 0 plus 0?" and "30 rows" in message

    message, dataset_id, drop_box = upload.add_file(ctx, str(qa_csv), "", False, "", "", "question", "context", "answer")
    assert "&#x27;qa&#x27;" in message and "30 rows" in message
    assert drop_box is None  # emptied for the next upload
    assert upload.inspect_upload(ctx, None, "", "")[-1] == gr.skip()  # ... which leaves the message standing
    first = datasets.page_rows(ctx, dataset_id, 0, 1).rows[0]["row"]
    assert first == {"instruction": "What is 0 plus 0?", "input": "", "output": "0", "category": "even"}


def test_a_jsonl_file_needs_no_mapping_and_overrides_reach_the_parser(ctx, alpaca_file, tmp_path):
    box, mapping_row, *_, message = upload.inspect_upload(ctx, str(alpaca_file), "", "")
    assert box.visible and not mapping_row.visible and "120 rows" in message
    renamed = tmp_path / "tasks.txt"  # no known extension: only the file type override reads it
    renamed.write_bytes(alpaca_file.read_bytes())
    assert "unsupported file type" in upload.add_file(ctx, str(renamed), "", False, "", "", "", "", "")[0]
    assert added_id(upload.add_file(ctx, str(renamed), "", False, "jsonl", "alpaca", "", "", "")) == 1


def test_a_refused_upload_lists_every_bad_row_and_stores_nothing(ctx, tmp_path):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "", "output": "x"}, {"instruction": "c"}]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    message, added, drop_box = upload.add_file(ctx, str(path), "", False, "", "", "", "", "")
    assert added == gr.skip() and drop_box == gr.skip()  # the file stays, to try again with 'keep the valid rows'
    assert "line 4: at column 2 a field name in double quotes was expected" in message
    assert "accept_partial" not in message and "&#x27;keep the valid rows&#x27;" in message
    for where in ("bad.jsonl line 2", "bad.jsonl line 3", "bad.jsonl line 4"):
        assert where in message
    assert datasets.list_datasets(ctx) == []
    message, dataset_id, _ = upload.add_file(ctx, str(path), "", True, "", "", "", "", "")
    assert "1 rows" in message and "3 bad rows were left out" in message
    assert datasets.get_dataset(ctx, dataset_id).row_count == 1


def test_the_demo_button_stores_the_whole_demo_dataset_and_says_how_big(ctx):
    message, dataset_id = upload.add_demo(ctx)
    assert datasets.get_dataset(ctx, dataset_id).row_count == DEMO_ROWS
    assert f"{DEMO_ROWS:,} rows" in message
    assert t("datasets.demo_hint", rows=f"{DEMO_ROWS:,}").startswith(f"{DEMO_ROWS:,} ")
    assert "1,000" not in t("datasets.demo_hint", rows=f"{DEMO_ROWS:,}")


# --- browse ---------------------------------------------------------------------------


def test_pages_search_and_category_filter_run_on_the_server(ctx, qa_dataset):
    table, view, label = browsing.first_page(ctx, qa_dataset, "", "")
    frame = TableReader(table)
    assert label == "**qa**, version 1 · rows 1–20 of 30"
    assert frame.headers == ["#", "instruction", "input", "output", "category"]
    assert frame.indices == list(range(20)) and [r[0] for r in frame.rows] == [str(i) for i in range(20)]
    assert view["version"] == 1 and view["total"] == 30 and view["kind"] == "alpaca"

    table, view, label = browsing.next_page(ctx, qa_dataset, "", "", view)
    assert TableReader(table).indices == list(range(20, 30)) and "rows 21–30 of 30" in label
    assert browsing.next_page(ctx, qa_dataset, "", "", view) == (gr.skip(), gr.skip(), gr.skip())  # no page past the end
    assert browsing.previous_page(ctx, qa_dataset, "", "", view)[1]["offset"] == 0

    table, _, label = browsing.first_page(ctx, qa_dataset, "IS 7 PLUS", "")
    assert TableReader(table).indices == [7] and "of 1" in label

    category, search = browsing.reset_filters(ctx, qa_dataset)
    assert category.visible and search == ""
    assert [c[1] for c in category.choices] == ["", "even", "odd"] and "even (15)" in category.choices[1][0]
    table, _, label = browsing.first_page(ctx, qa_dataset, "", "odd")
    assert all(row[-1] == "odd" for row in TableReader(table).rows) and "of 15" in label
    assert "no rows match" in browsing.first_page(ctx, qa_dataset, "zebra", "")[2]


def test_no_category_column_hides_the_filter(ctx, alpaca_file, tmp_path):
    rows = [{"instruction": f"q{i}", "output": "a"} for i in range(3)]
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset_id = added_id(upload.add_file(ctx, str(path), "", False, "", "", "", "", ""))
    category, _ = browsing.reset_filters(ctx, dataset_id)
    assert not category.visible


def test_cells_are_plain_strings_html_included(ctx, tmp_path):
    path = write_csv(tmp_path / "xss.csv", [{"instruction": XSS, "output": "<script>alert(1)</script>"}])
    dataset_id = added_id(upload.add_file(ctx, str(path), "", False, "", "", "", "", ""))
    table, _, _ = browsing.first_page(ctx, dataset_id, "", "")
    row = TableReader(table).rows[0]
    assert (row[1], row[3]) == (XSS, "<script>alert(1)</script>")
    assert "<img" not in table and "<script" not in table and "&lt;img src=x onerror=&quot;" in table


# --- edit, add, delete ----------------------------------------------------------------


def test_editing_a_cell_makes_version_2_and_a_stale_form_is_refused(ctx, qa_dataset):
    message, editing, field, value, row = edit.load_row(ctx, qa_dataset, 3, None)
    assert message == "" and editing["index"] == 3 and editing["version"] == 1
    assert field.value == "output" and value == "6" and row["instruction"] == "What is 3 plus 3?"
    assert "category" in [c[1] for c in field.choices]
    assert edit.show_field(editing, "instruction") == "What is 3 plus 3?"

    note, changed = announced(ctx, edit.save_cell(ctx, editing["dataset_id"], editing, "output", "six"))
    assert "&#x27;qa&#x27; version 2 saved: edited &#x27;output&#x27; of row 3" in note
    assert datasets.page_rows(ctx, qa_dataset, 3, 1).rows[0]["row"]["output"] == "six"

    message, changed = edit.save_cell(ctx, editing["dataset_id"], editing, "output", "seven")  # the form still shows version 1
    assert "notice-error" in message and "is newer; reload and edit again" in message and changed == gr.skip()
    _, editing, *_ = edit.reload_row(ctx, changed, editing, "output")
    assert editing["version"] == 2
    message, _ = edit.save_cell(ctx, editing["dataset_id"], editing, "output", "six")
    assert "Nothing changed" in message


def test_bad_row_choices_and_values_get_clear_messages(ctx, qa_dataset):
    assert "no such row" in edit.load_row(ctx, qa_dataset, 99, None)[0]
    assert "Pick a row first" in edit.load_row(ctx, qa_dataset, None, None)[0]
    assert "Pick a row first" in edit.load_row(ctx, qa_dataset, -1, None)[0]
    _, editing, *_ = edit.load_row(ctx, qa_dataset, 0, None)
    message, _ = edit.save_cell(ctx, editing["dataset_id"], editing, "instruction", "   ")
    assert "notice-error" in message and "row 0" in message
    assert len(datasets.list_versions(ctx, qa_dataset)) == 1


def test_chat_rows_are_edited_and_added_as_messages_json(ctx, tmp_path):
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(chat[0]) + "\n")
    dataset_id = added_id(upload.add_file(ctx, str(path), "", False, "", "", "", "", ""))
    table, view, _ = browsing.first_page(ctx, dataset_id, "", "")
    assert view["kind"] == "chat" and TableReader(table).rows[0][1] == "user: hi\nassistant: hello"
    assert [box.visible for box in edit.add_row_form(view)] == [False, False, False, False, True]

    _, editing, field, value, _ = edit.load_row(ctx, dataset_id, 0, None)
    assert field.value == "messages" and json.loads(value) == chat[0]["messages"]
    note, _ = announced(ctx, edit.save_cell(ctx, editing["dataset_id"], editing, "messages", value.replace("hello", "hey")))
    assert "&#x27;chat&#x27; version 2 saved" in note

    view = view_of(ctx, dataset_id)
    assert "not valid JSON" in edit.add_new_row(ctx, view, "", "", "", "", "[{oops")[0]
    note, _ = announced(ctx, edit.add_new_row(ctx, view, "", "", "", "", json.dumps(chat[0]["messages"])))
    assert "&#x27;chat&#x27; version 3 saved: added row 1" in note


def test_add_a_row_with_extra_fields_and_delete_rows_by_ranges(ctx, qa_dataset):
    view = view_of(ctx, qa_dataset)
    message, _ = edit.add_new_row(ctx, view, "q", "", "a", "category odd", "")
    assert "is not &#x27;name: value&#x27;" in message
    note, _ = announced(ctx, edit.add_new_row(ctx, view, "Name a colour.", "", "red", "category: colours", ""))
    assert "&#x27;qa&#x27; version 2 saved: added row 30 (31 rows)" in note
    assert datasets.page_rows(ctx, qa_dataset, 30, 1).rows[0]["row"]["category"] == "colours"

    view = view_of(ctx, qa_dataset)
    for bad, expected in (("3, x", "&#x27;x&#x27; is not a row number"), ("9-7", "runs backwards"), (" , ", "at least one")):
        message, changed, box = edit.delete_selected(ctx, view, bad)
        assert expected in message and changed == box == gr.skip(), bad  # the box keeps what to fix
    assert "no such row" in edit.delete_selected(ctx, view, "3, 99")[0]
    *result, box = edit.delete_selected(ctx, view, "3, 7-9")
    note, _ = announced(ctx, result)
    assert "&#x27;qa&#x27; version 3 saved: deleted 4 rows (3, 7, 8, 9) (27 rows)" in note
    assert box == ""  # a second click must not delete the rows that moved up
    assert edit.parse_indices("1; 4-5,4") == [1, 4, 5]


def test_the_edit_form_follows_its_row_through_a_delete(ctx, qa_dataset):
    _, editing, *_ = edit.load_row(ctx, qa_dataset, 5, None)
    row = editing["row"]
    _, changed, _ = edit.delete_selected(ctx, view_of(ctx, qa_dataset), "1, 3, 8")
    _, moved, field, value, shown, index = edit.reload_row(ctx, changed, editing, "output")
    assert moved["index"] == index == 3 and shown == row  # two rows above it went
    _, changed, _ = edit.delete_selected(ctx, view_of(ctx, qa_dataset), "3")
    _, closed, field, value, shown, index = edit.reload_row(ctx, changed, moved, "output")
    assert closed is None and value == "" and shown is None and index is None  # its row went: the form closes


def test_ctrl_click_marks_and_unmarks_rows_for_deletion():
    def click(text, index):
        box, panel = edit.mark_table_row(text, gr.EventData(None, {"index": index}))
        assert panel.open  # the delete panel opens to show what is marked
        return box

    assert click("", 7) == "7"
    assert click("7", 3) == "3, 7"
    assert click("3, 7-9", 8) == "3, 7, 9"  # a range the user typed is kept, less the row
    assert click("3, 7", 3) == "7"
    assert click("not numbers", 2) == "2"


# --- versions, export -----------------------------------------------------------------


def test_history_and_going_back_make_a_new_version(ctx, qa_dataset):
    view = view_of(ctx, qa_dataset)
    edit.delete_selected(ctx, view, "0-9")
    history, choices = versions.show_history(ctx, qa_dataset)
    assert list(history.columns) == [t(f"datasets.history.{c}") for c in versions.HISTORY_COLUMNS]
    assert history.iloc[0].tolist()[:3] == [2, "deleted 10 rows (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)", 20]
    assert history.iloc[1][t("datasets.history.jobs")] == 0 and len(history.iloc[1][t("datasets.history.hash")]) == 12
    version_1 = datasets.list_versions(ctx, qa_dataset)[-1].id
    assert choices.value == version_1 and choices.choices[0][0].startswith("version 1: uploaded qa.csv")
    note, _ = announced(ctx, versions.revert(ctx, qa_dataset, version_1))
    assert "&#x27;qa&#x27; version 3 saved: went back to version 1 (30 rows)" in note


def test_export_writes_the_shown_version_as_jsonl_or_formula_safe_csv(ctx, qa_dataset):
    view = view_of(ctx, qa_dataset)
    _, editing, *_ = edit.load_row(ctx, qa_dataset, 0, None)
    edit.save_cell(ctx, editing["dataset_id"], editing, "output", "=1+1")
    message, file = versions.export(ctx, view, "jsonl")  # the view still shows version 1
    path = Path(file.value["path"] if isinstance(file.value, dict) else file.value)
    assert path.name == "qa-v1.jsonl" and "version 1" in message
    assert json.loads(path.read_text().splitlines()[0])["output"] == "0"

    ours = versions._export_folder().parent
    stale = time.time() - versions.EXPORT_KEEP_SECONDS - 1
    for folder in ours.iterdir():
        os.utime(folder, (stale, stale))
    message, file = versions.export(ctx, view_of(ctx, qa_dataset), "csv")
    assert len(list(ours.iterdir())) == 1  # exports older than an hour were removed
    path = Path(file.value["path"] if isinstance(file.value, dict) else file.value)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert path.name == "qa-v2.csv" and len(rows) == 30 and rows[0]["output"] == "'=1+1"


# --- split, quality, token preview ----------------------------------------------------


def test_split_by_fraction_and_by_column(ctx, qa_dataset):
    view = view_of(ctx, qa_dataset)
    by, stratify = splitting.column_choices(view)
    assert [c[1] for c in by.choices] == ["", "category"] and stratify.value == "category"
    note, _ = announced(ctx, splitting.split(ctx, view, 0.2, 3, "", "category"))
    assert "split 24 train / 6 validation (seed 3, stratified by &#x27;category&#x27;)" in note
    assert datasets.get_dataset(ctx, qa_dataset).validation_rows == 6
    message, _ = splitting.split(ctx, view_of(ctx, qa_dataset), 0.1, 0, "category", "")
    assert "notice-error" in message and "expected train or validation" in message
    assert "need a number" in splitting.split(ctx, view, None, 0, "", "")[0]


def test_quality_report_shows_the_summary_plots_and_fixes(ctx, qa_dataset):
    message, summary, lengths, categories, state, *fixes = quality.run_report(ctx, qa_dataset, "demo", "alpaca", 16)
    assert message == "" and state["version_id"] == datasets.get_dataset(ctx, qa_dataset).version_id
    assert "| exact duplicates | 2 | 2 groups (e.g. rows 0 = 28; 1 = 29) |" in summary
    assert "cut at the max length" in summary and "**Category balance** (category, 2 values)" in summary
    assert isinstance(lengths, go.Figure) and isinstance(categories, go.Figure)
    assert [f.visible for f in fixes] == [fix == "drop_duplicates" for fix in FIXES]

    note, _ = announced(ctx, quality.apply_quality_fix(ctx, "drop_duplicates", state))
    assert "&#x27;qa&#x27; version 2 saved: drop exact duplicates (keep the first): 2 rows (28 rows)" in note
    message, _ = quality.apply_quality_fix(ctx, "drop_duplicates", state)  # the report is of version 1
    assert "is newer" in message
    fixes = quality.run_report(ctx, qa_dataset, "demo", "alpaca", 16)[5:]
    assert not any(f.visible for f in fixes)
    message = quality.run_report(ctx, qa_dataset, "/nonexistent/model", "alpaca", 16)[0]
    assert "notice-error" in message and "&#x27;/nonexistent/model&#x27; is not a model folder the studio may load" in message


def test_report_text_from_the_data_is_escaped(ctx, tmp_path):
    rows = [{"instruction": "a", "output": "b", "category": XSS}, {"instruction": "### Response: x", "output": "c"}]
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset_id = added_id(upload.add_file(ctx, str(path), "", False, "", "", "", "", ""))
    _, summary, *_ = quality.run_report(ctx, dataset_id, "demo", "alpaca", 64)
    assert re.search(r"(?<!\\)<", summary) is None and r"\<img src\=x" in summary
    assert r"\#\#\# Response\:" in summary  # the leaked marker, shown, not a heading


def test_token_preview_marks_trained_masked_and_cut_tokens(ctx, qa_dataset, tiny_model_dir):
    html_out = quality.preview(ctx, qa_dataset, 4, "demo", "alpaca", 512)
    spans = html_out.split("<pre")[1]
    assert "tok-trained" in spans and "tok-masked" in spans and "tok-cut" not in spans
    assert "&#x27;qa&#x27; version 1, row 4:" in html_out and "0 cut" in html_out
    cut = quality.preview(ctx, qa_dataset, 4, str(tiny_model_dir), "chatml", 16)
    assert "tok-cut" in cut.split("<pre")[1] and "longer than the max length" in cut
    assert "&lt;|im_start|&gt;" in cut and "<|im_start|>" not in cut  # escaped
    assert "no such row" in quality.preview(ctx, qa_dataset, 99, "demo", "alpaca", 512)


def test_preview_html_escapes_row_text():
    fake = {"index": 0, "max_length": 8, "tokens": 3, "trained_tokens": 1, "masked_tokens": 2, "cut_tokens": 0,
            "truncated": False, "nothing_to_learn": False,
            "spans": [{"text": XSS, "trained": False, "cut": False, "tokens": 2},
                      {"text": "<b>ok</b>", "trained": True, "cut": False, "tokens": 1}]}
    out = quality.preview_html(fake)
    assert "<img" not in out and "&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in out
    assert "&lt;b&gt;ok&lt;/b&gt;" in out


def test_handlers_answer_when_nothing_is_chosen(ctx):
    assert browsing.first_page(ctx, None, "", "")[2] == t("datasets.no_dataset")
    assert "No dataset chosen" in edit.add_new_row(ctx, None, "a", "", "b", "", "")[0]
    assert "No dataset chosen" in quality.run_report(ctx, None, "demo", "alpaca", 64)[0]
    assert versions.announce_version(ctx, None) == (gr.skip(), gr.skip(), gr.skip())
    assert isinstance(listing.datasets_frame([]), pd.DataFrame)


# --- every panel follows the dataset picked --------------------------------------------


def test_picking_another_dataset_empties_what_belongs_to_the_last(ctx, qa_dataset, tmp_path):
    other_csv = write_csv(tmp_path / "other.csv", qa_rows(6))
    other = added_id(upload.add_file(ctx, str(other_csv), "", False, "", "", "question", "context", "answer"))
    _, editing, *_ = edit.load_row(ctx, qa_dataset, 3, None)
    message, form, field, value, row, index, delete_box, *more = edit.clear_form()
    assert form is None and value == "" and row is None and index is None and delete_box == "" and not any(more)
    assert field.choices == [] and field.value is None
    # a form still holding qa's row while 'other' is picked is refused; neither gets a version
    message, changed = edit.save_cell(ctx, other, editing, "output", "six")
    assert "another dataset" in message and changed == gr.skip()
    assert [len(datasets.list_versions(ctx, i)) for i in (qa_dataset, other)] == [1, 1]

    cleared = quality.clear_report()
    assert cleared[4] is None and not any(b.visible for b in cleared[5:5 + len(FIXES)]) and cleared[-2:] == ("", 0)
    assert versions.clear_versions()[2].visible is False
    assert versions.describe(ctx, other).startswith("**other** (id 2) · version 1 · 6 rows · last change: uploaded")
    assert browsing.first_page(ctx, other, "", "")[2].startswith("**other**, version 1")


def test_quality_report_uses_the_training_cutoff_and_says_what_matters(ctx, qa_dataset):
    assert quality.TRAINING.training.max_length == 128 and quality.TRAINING.template.name == "alpaca"
    _, summary, *_ = quality.run_report(ctx, qa_dataset, "demo", "alpaca", quality.TRAINING.training.max_length)
    assert summary.startswith("**qa**, version 1: 30 rows, template alpaca, cutoff 128 tokens")
    assert "- 2 exact duplicates: drop them, or keep them if repetition is intended." in summary
    _, summary, *_ = quality.run_report(ctx, qa_dataset, "demo", "alpaca", 16)
    assert "are longer than the cutoff of 16 tokens, so their ends are never trained" in summary
    assert quality.copy_setting(256) == 256
    assert quality.copy_template("chatml") == "chatml" and quality.copy_template("custom") == gr.skip()


def test_column_names_are_guessed_from_common_names():
    assert upload.guess_columns(["Prompt", "completion"]) == {"instruction": "Prompt", "output": "completion"}
    assert upload.guess_columns(["query", "context", "response", "answer"]) == {
        "instruction": "query", "input": "context", "output": "response"}
    assert upload.guess_columns(["instruction", "input", "output"]) == {f: f for f in ("instruction", "input", "output")}
    assert upload.guess_columns(["a", "b"]) == {}


def test_a_tsv_with_prompt_and_completion_is_mapped_by_itself(ctx, tmp_path):
    path = write_csv(tmp_path / "pc.tsv", [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(3)], delimiter="\t")
    box, mapping_row, drop_i, drop_in, drop_out, columns, sample, message = upload.inspect_upload(ctx, str(path), "", "")
    assert (drop_i.value, drop_in.value, drop_out.value) == ("prompt", "", "completion") and "3 rows" in message
    assert added_id(upload.add_file(ctx, str(path), "", False, "", "", drop_i.value, drop_in.value, drop_out.value))


def test_follow_training_ties_the_report_settings_to_the_train_tab(ctx):
    from studio.ui.datasets import build, follow_training

    with gr.Blocks() as page:
        data = build(ctx, page)
        train = gr.Textbox("demo"), gr.Dropdown(["alpaca", "custom"], value="alpaca"), gr.Number(256)
        before = set(page.fns)
        follow_training(data, *train)
    wired = [page.fns[i] for i in set(page.fns) - before]
    assert sorted(fn.name for fn in wired) == ["copy_setting", "copy_setting", "copy_template"]
    targets = {fn.outputs[0]._id for fn in wired}
    assert targets == {c._id for c in data.report_settings}
