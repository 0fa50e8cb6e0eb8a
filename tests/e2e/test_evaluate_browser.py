"""The Evaluate tab in a real headless Chromium, against the real `studio serve` and a real
worker: pick a tiny job's base, a checkpoint and its result, start an evaluation run on
its dataset, watch it finish, and read the table of models by metrics, the charts and
the row view."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import make_settings, wait_until
from tests.e2e.conftest import SHOTS

pytestmark = pytest.mark.e2e

QUICK = {
    "training": {"max_steps": 8, "batch_size": 8, "sample_every": 4, "save_every": 4, "max_length": 128,
                 "max_new_tokens": 8},
    "data": {"probe_count": 2, "exact_match_rows": 4},
}


def _pick(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).first.click()  # the label holds this text


def test_evaluate_a_base_a_checkpoint_and_a_result(tmp_path, start_server, start_worker, tiny_model_dir, alpaca_file,
                                                   processes, page):
    settings = make_settings(tmp_path / "data")
    start_worker(settings)
    url = start_server(settings)
    with httpx.Client(base_url=url, timeout=30) as client:
        dataset = client.post("/api/datasets", files={"file": (alpaca_file.name, alpaca_file.read_bytes())}).json()
        job = client.post("/api/jobs", json={"dataset_id": dataset["id"], "base_model": str(tiny_model_dir),
                                             "config": QUICK})
        job_id = job.json()["id"]
        wait_until(lambda: client.get(f"/api/jobs/{job_id}").json()["status"] == "succeeded", 240, 0.5, "the job")

    page.goto(url)
    page.get_by_role("tab", name="Evaluate").click()
    for model in (f"{tiny_model_dir} (base)", f"job-{job_id}/checkpoint-4", f"job-{job_id} (final"):
        _pick(page, "#eval-models", model)
    page.keyboard.press("Escape")
    wait_until(lambda: "120 rows" in page.locator("#eval-dataset input").input_value(), 20, 0.2, "the dataset")
    page.locator("#eval-split").get_by_text("All rows").click()
    page.locator("#eval-max-rows input").fill("6")
    page.locator("#eval-max-tokens input[type=number]").fill("12")
    page.locator("#eval-max-tokens input[type=number]").press("Enter")
    page.click("#eval-start")
    page.locator("#eval-message .notice-ok").wait_for()
    assert "Evaluation 1 queued: 6 rows, 3 models" in page.inner_text("#eval-message")
    try:
        wait_until(lambda: "succeeded" in page.inner_text("#eval-status"), 240, 0.5, "the evaluation to finish")
    except AssertionError:
        raise AssertionError(f"{page.inner_text('#eval-status')}\n{processes.logs()}") from None

    # The table: one row per model, a column per metric.
    table = page.locator("#eval-table")
    wait_until(lambda: f"job-{job_id}/checkpoint-4" in table.inner_text(), 20, 0.3, "the metrics table")
    text = table.inner_text()
    for column in ("perplexity", "exact_match", "rouge1", "rougeL", "bleu", "chrf", "length"):
        assert column in text
    assert str(tiny_model_dir) in text and f"job-{job_id}" in text
    page.locator("#eval-bars .js-plotly-plot").wait_for()
    page.locator("#eval-steps .js-plotly-plot").wait_for()

    # A category narrows the table; the row view compares two models.
    page.locator("#eval-category input").click()
    option = page.get_by_role("option").nth(1)
    category = option.inner_text()
    option.click()
    wait_until(lambda: category in page.locator("#eval-category input").input_value(), 10, 0.2, "the category")
    page.locator("#eval-filter").get_by_text("All rows").click()
    # the filter starts at "A right, B wrong": wait for the update that shows every row
    wait_until(lambda: "6 of 6 rows" in page.inner_text("#eval-rows-count"), 30, 0.3, "the row view's 6 rows")
    assert "reference" in page.inner_text("#eval-rows")
    page.locator("#eval-filter").get_by_text("A right, B wrong").click()
    wait_until(lambda: re.match(r"\d+ of 6 rows", page.inner_text("#eval-rows-count")), 20, 0.3, "the filter")
    page.screenshot(path=str(SHOTS / "studio-e2e-evaluate.png"), full_page=True)
