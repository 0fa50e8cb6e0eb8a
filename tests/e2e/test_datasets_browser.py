"""The Datasets tab in a real headless Chromium against a real `studio serve`: upload a
CSV whose columns need mapping, search, edit a cell (version 2), run the quality report
(its plot draws), drop the duplicates it found (version 3), look at a row's tokens,
export a file, and see that a cell holding HTML shows as text and never runs."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from studio.core.demo import DEMO_ROWS
from tests.conftest import wait_until
from tests.e2e.conftest import SHOTS

pytestmark = pytest.mark.e2e

XSS = '<img src=x onerror="window.__xss=1">'


def qa_csv(path: Path) -> Path:
    """Question/answer columns (not Alpaca names), two exact duplicates, one row of HTML."""
    rows = [[f"What is {i} plus {i}?", "", str(2 * i), "even" if i % 2 == 0 else "odd"] for i in range(24)]
    rows += [rows[0], rows[1], [XSS, "${window.__xss=3}", "<script>window.__xss=2</script>", XSS]]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "context", "answer", "category"])
        writer.writerows(rows)
    return path


def pick(page, elem_id: str, option: str) -> None:
    """Choose an option of a gr.Dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()


def cell(page, table: str, text: str, exact: bool = False):
    """A visible table cell (gr.Dataframe also keeps a hidden copy of the rows for sizing)."""
    cells = page.locator(f"#{table} td, #{table} [role=gridcell]")
    return cells.get_by_text(text, exact=exact).filter(visible=True).first


def text_of(page, selector: str) -> str:
    return page.inner_text(selector)


def test_prepare_a_dataset_in_the_browser(settings, start_server, tmp_path, processes, page):
    started = time.monotonic()
    url = start_server(settings)
    page.goto(url)
    data = qa_csv(tmp_path / "qa.csv")

    # Upload: the CSV's columns are shown and guessed from their names; unmapped, the file
    # cannot be read; mapped again, it can. A stored file leaves the drop box empty.
    page.locator("#dataset-file input[type=file]").set_input_files(str(data))
    page.locator("#dataset-mapping").wait_for()
    assert "question, context, answer, category" in text_of(page, "#dataset-columns")
    assert "question → instruction, context → input, answer → output" in text_of(page, "#dataset-columns")
    page.locator("#dataset-message .notice-ok").wait_for()
    pick(page, "map-output", "(not mapped)")
    page.locator("#dataset-message").get_by_text("missing column").first.wait_for()
    pick(page, "map-output", "answer")
    page.locator("#dataset-message .notice-ok").wait_for()
    page.click("#dataset-add")
    page.locator("#dataset-message").get_by_text("27 rows from qa.csv").wait_for()
    page.locator("[data-testid=toast-body]").get_by_text("27 rows from qa.csv").first.wait_for()
    page.locator("#rows-page").get_by_text("qa, version 1 · rows 1–20 of 27").wait_for()
    wait_until(lambda: page.locator("#dataset-file").get_by_text("qa.csv").count() == 0, 10, 0.1, "an empty drop box")

    # A cell holding HTML shows as text and never runs (table, category filter, report).
    page.locator("#rows-search textarea").fill("onerror")
    page.locator("#rows-search textarea").press("Enter")
    page.locator("#rows-page").get_by_text("rows 1–1 of 1").wait_for()
    cell(page, "preview-table", XSS).wait_for()
    cell(page, "preview-table", "<script>window.__xss=2</script>").wait_for()

    # Search, pick a row in the table, edit its output: version 2.
    page.locator("#rows-search textarea").fill("is 3 plus")
    page.locator("#rows-search textarea").press("Enter")
    page.locator("#rows-page").get_by_text("rows 1–1 of 1").wait_for()
    cell(page, "preview-table", "What is 3 plus 3?").click()
    wait_until(lambda: page.locator("#edit-value textarea").input_value() == "6", 10, 0.1, "the row in the edit form")
    assert page.locator("#preview-table tr.current").count() == 1  # the clicked row stays highlighted
    page.locator("#edit-value textarea").fill("six")
    page.click("#edit-save")
    page.locator("#dataset-status").get_by_text("'qa' version 2 saved: edited 'output' of row 3").wait_for()
    page.locator("[data-testid=toast-body]").get_by_text("'qa' version 2 saved").first.wait_for()
    cell(page, "preview-table", "six", exact=True).wait_for()
    assert "qa, version 2" in text_of(page, "#rows-page")

    # Quality report: its histogram draws; drop the duplicates it found: version 3.
    page.get_by_role("tab", name="Quality and token preview").click()
    page.click("#quality-run")
    page.locator("#quality-lengths .js-plotly-plot").wait_for()
    page.locator("#quality-categories .js-plotly-plot").wait_for()
    assert "| exact duplicates |" not in text_of(page, "#quality-summary")  # rendered as a table
    assert "exact duplicates" in text_of(page, "#quality-summary") and XSS in text_of(page, "#quality-summary")
    page.click("#fix-drop_duplicates")
    page.locator("#dataset-status").get_by_text("'qa' version 3 saved: drop exact duplicates").wait_for()
    page.locator("#fix-drop_duplicates").wait_for(state="hidden")  # the report re-ran on version 3

    # Token preview: the trained response apart from the masked prompt.
    page.locator("#token-index input").fill("3")
    page.click("#token-preview-btn")
    page.locator("#token-preview pre .tok-trained").first.wait_for()
    assert page.locator("#token-preview pre .tok-masked").count() >= 1
    assert "six" in page.locator("#token-preview pre .tok-trained").first.inner_text()
    page.screenshot(path=str(SHOTS / "studio-e2e-datasets-quality.png"), full_page=True)

    # Export the version shown: a CSV file downloads.
    page.get_by_role("tab", name="Versions and export").click()
    cell(page, "versions-table", "drop exact duplicates (keep the first): 2 rows").wait_for()
    page.locator("#export-format").get_by_role("radio", name="CSV").check()
    page.click("#export-btn")
    link = page.locator("#export-file a").first
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    lines = saved.read_text(encoding="utf-8").splitlines()
    assert saved.name == "qa-v3.csv" and lines[0] == "instruction,input,output,category" and len(lines) == 26

    # Ctrl-click marks rows for deletion (the delete panel opens); deleting empties the box.
    page.get_by_role("tab", name="Rows", exact=True).click()
    page.locator("#rows-search textarea").fill("")
    page.locator("#rows-search textarea").press("Enter")
    page.locator("#rows-page").get_by_text("qa, version 3 · rows 1–20 of 25").wait_for()
    page.locator("#preview-table tr[data-index='1']").click(modifiers=["Control"])
    page.locator("#preview-table tr[data-index='4']").click(modifiers=["Control"])
    box = page.locator("#delete-rows textarea")
    wait_until(lambda: box.is_visible() and box.input_value() == "1, 4", 10, 0.1, "rows 1 and 4 in the delete box")
    assert page.locator("#preview-table tr.marked").count() == 2
    page.click("#delete-btn")
    page.locator("#dataset-status").get_by_text("'qa' version 4 saved: deleted 2 rows (1, 4)").wait_for()
    page.locator("#rows-page").get_by_text("qa, version 4 · rows 1–20 of 23").wait_for()
    wait_until(lambda: box.input_value() == "", 10, 0.1, "the delete box to empty")
    # the edit form followed its row (3, with row 1 deleted above it) to #2, its box too
    wait_until(lambda: page.locator("#edit-index input").input_value() == "2", 10, 0.1, "the row # to follow")
    assert "Field of row 2 ('qa', version 4)" in text_of(page, "#edit-field")

    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    page.screenshot(path=str(SHOTS / "studio-e2e-datasets-versions.png"), full_page=True)
    print(f"datasets browser e2e took {time.monotonic() - started:.1f}s")


def test_every_panel_follows_the_dataset_picked(settings, start_server, tmp_path, processes, page):
    """Two datasets; a row of the first in the edit form; pick the second: the form, the
    report and the messages of the first are gone, Save cannot write into the first, and
    an edit of the second makes a version of the second only (checked over the REST API)."""
    url = start_server(settings)
    page.goto(url)
    tsv = tmp_path / "second.tsv"
    tsv.write_text("prompt\tcompletion\n" + "".join(f"Spell {i}.\t{i}\n" for i in range(8)), encoding="utf-8")

    page.click("#dataset-demo")
    page.locator("#dataset-status").get_by_text("demo tasks (id 1) · version 1").wait_for()
    page.locator("#dataset-file input[type=file]").set_input_files(str(tsv))
    page.locator("#dataset-columns").get_by_text("prompt → instruction, completion → output").wait_for()
    page.locator("#dataset-message .notice-ok").wait_for()
    page.click("#dataset-add")
    page.locator("#rows-page").get_by_text("second, version 1 · rows 1–8 of 8").wait_for()
    page.locator("#dataset-status").get_by_text("second (id 2) · version 1 · 8 rows").wait_for()

    # The demo data's own report: the cutoff of the demo preset, and advice on its duplicates.
    pick(page, "preview-select", f"demo tasks (id 1, {DEMO_ROWS} rows)")
    page.locator("#rows-page").get_by_text("demo tasks, version 1").wait_for()
    page.get_by_role("tab", name="Quality and token preview").click()
    assert page.locator("#quality-max-length input").input_value() == "128"
    page.click("#quality-run")
    def reported():
        return "cutoff 128 tokens" in text_of(page, "#quality-summary") or page.locator("#quality-message .notice").count()

    wait_until(reported, 180, 0.25, "the quality report")
    summary = text_of(page, "#quality-summary")
    if "cutoff 128 tokens" not in summary:
        page.screenshot(path=str(SHOTS / "studio-e2e-follow-failed.png"), full_page=True)
    assert "cutoff 128 tokens" in summary, text_of(page, "#quality-message")
    assert "exact duplicates: drop them, or keep them if repetition is intended" in summary
    page.screenshot(path=str(SHOTS / "studio-e2e-follow-report.png"), full_page=True)

    # A row of the demo dataset in the edit form ...
    page.get_by_role("tab", name="Rows", exact=True).click()
    page.locator("#preview-table tr[data-index='2']").click()
    wait_until(lambda: page.locator("#edit-value textarea").input_value() != "", 10, 0.1, "the row in the edit form")
    assert "'demo tasks', version 1" in text_of(page, "#edit-field")

    # ... then the second dataset picked: nothing of the demo dataset stays.
    pick(page, "preview-select", "second (id 2, 8 rows)")
    page.locator("#rows-page").get_by_text("second, version 1 · rows 1–8 of 8").wait_for()
    wait_until(lambda: page.locator("#edit-value textarea").input_value() == "", 10, 0.1, "an empty edit form")
    assert "demo tasks" not in text_of(page, "#edit-panel")
    page.click("#edit-save")
    page.locator("#edit-message").get_by_text("Pick a row first").wait_for()  # next to the button
    page.get_by_role("tab", name="Quality and token preview").click()
    wait_until(lambda: "demo tasks" not in text_of(page, "#quality-summary"), 10, 0.1, "the old report gone")
    page.get_by_role("tab", name="Rows", exact=True).click()

    # An edit now goes to the second dataset, and only there.
    page.locator("#preview-table tr[data-index='3']").click()
    wait_until(lambda: page.locator("#edit-value textarea").input_value() == "3", 10, 0.1, "row 3 of second")
    page.locator("#edit-value textarea").fill("three")
    page.click("#edit-save")
    page.locator("[data-testid=toast-body]").get_by_text("'second' version 2 saved: edited 'output' of row 3").first.wait_for()
    page.locator("#dataset-status").get_by_text("'second' version 2 saved").wait_for()
    page.screenshot(path=str(SHOTS / "studio-e2e-follow-edit.png"), full_page=True)

    listed = {d["id"]: d for d in page.request.get(f"{url}/api/datasets").json()}
    assert (listed[1]["name"], listed[1]["version"]) == ("demo tasks", 1)
    assert (listed[2]["name"], listed[2]["version"]) == ("second", 2)
    rows = page.request.get(f"{url}/api/datasets/2/rows").json()
    assert rows[3]["output"] == "three" and rows[3]["instruction"] == "Spell 3."

