"""The guided Train tab, honest time, the light dashboard, readable settings, the compare
view and a page that survives a reload, in a real headless Chromium against the real
`studio serve` and a real Celery worker training a tiny local model.

Screenshots go to /tmp/studio-guided-*.png."""

from __future__ import annotations

import re

import pytest

from studio.services import jobs
from tests.conftest import upload_file, wait_finished, wait_until
from tests.e2e.conftest import SHOTS
from tests.e2e.test_browser import fill_number, fill_numbers, job_status, open_tab, plot_points, table_rows

pytestmark = pytest.mark.e2e

SHORT_RUN = {
    "training.max_steps": 12,
    "training.sample_every": 4,
    "training.save_every": 4,
    "training.keep_last": 1,
    "training.max_length": 128,
    "training.batch_size": 8,
    "training.max_new_tokens": 8,
}


def query(page) -> str:
    """The page's query string as the page sees it (history.replaceState included)."""
    return page.evaluate("() => window.location.search")


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"studio-guided-{name}.png"), full_page=True)


def test_guided_train_watch_reload_settings_and_compare(
    ctx, settings, start_server, start_worker, tiny_model_dir, alpaca_file, processes, page
):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    dataset_id = upload_file(ctx, alpaca_file)
    start_worker(settings)
    url = start_server(settings)
    page.goto(url + "/?tab=train")

    # The guided view: four choices; the generated form waits, closed, under Advanced.
    page.locator("#train-goal").get_by_text("balanced", exact=True).wait_for()
    assert page.locator("#train-method").get_by_text("LoRA: trains small add-on weights").is_visible()
    assert page.locator("#train-method").get_by_text("Full: trains every weight").is_visible()
    assert not page.locator("#cfg-training-learning_rate input").is_visible(), "Advanced starts closed"
    page.locator("#base-model textarea").fill(str(tiny_model_dir))
    page.locator("#base-model textarea").press("Tab")
    assert f"dataset={dataset_id}" in query(page), query(page)
    plan = wait_until(lambda: "time:" in (text := page.inner_text("#train-plan")) and text, 60, 0.3, "a time estimate")
    assert "rough estimate" in plan, plan  # nothing has finished on this worker yet
    shot(page, "train-guided")

    # The goal and the data fill in Advanced: more passes for "best quality".
    page.locator("#train-advanced > button.label-wrap").click()
    epochs = page.locator("#cfg-training-epochs input")
    # quick try on 108 rows of the tiny model: 2 passes (the demo base's 8 came first)
    wait_until(lambda: epochs.input_value() == "2", 60, 0.2, "the goal's settings for the tiny model")
    quick = float(epochs.input_value())
    page.locator("#train-goal").get_by_text("best quality", exact=True).click()
    wait_until(lambda: float(epochs.input_value()) > quick, 30, 0.2, "best quality to train longer")
    fill_numbers(page, SHORT_RUN)
    page.locator("#cfg-data > button.label-wrap").click()
    fill_number(page, "data.exact_match_rows", 4)
    fill_number(page, "data.probe_count", 2)
    shot(page, "train-advanced")
    page.click("#launch")

    # The dashboard: its job in the URL, a phase and an ETA while it runs, points appended.
    page.locator("#job-status [data-status]").wait_for()
    try:
        wait_until(lambda: "job=1" in query(page) and "tab=jobs" in query(page), 30, 0.2, "the URL to name the job")
    except AssertionError:
        raise AssertionError(f"{query(page)} {page.locator('#job-select input').input_value()} "
                             f"{page.evaluate('() => window.studioLivePlotJob')} {errors}")
    seen = set()  # (status, phase) pairs the badge showed

    def look() -> str | None:
        # one read of both attributes: two reads could straddle a redraw of the badge
        status, phase = page.locator("#job-status [data-status]").evaluate(
            "b => [b.dataset.status, b.dataset.phase]")
        seen.add((status, phase))
        return status

    def done() -> bool:
        return look() == "succeeded"

    wait_until(lambda: look() and plot_points(page).get("train-loss"), 90, 0.2, "the first train-loss points")
    shot(page, "jobs-running")

    # A reload lands on the same tab and job, and the plot carries on.
    page.reload()
    page.locator("#job-status [data-status]").wait_for()
    assert page.locator("#job-select input").input_value().startswith("1: ")
    try:
        wait_until(done, 180, 0.25, "the job to succeed")
    except AssertionError:
        raise AssertionError(f"status {job_status(page)}; {page.inner_text('#job-status')}\n{processes.logs()}")
    points = wait_until(lambda: (p := plot_points(page)).get("eval-loss") == 4 and p, 30, 0.3, "the final plot")
    assert points["train-loss"] == 12 and points["exact-match"] == 4, points
    # a running job always says what it is doing
    assert all(phase in {"preparing", "training", "evaluating", "evaluating_base", "saving", "finishing"}
               for status, phase in seen if status == "running"), seen
    figures = wait_until(lambda: "no longer on disk" in (f := page.inner_text("#job-figures")) and f, 15, 0.3, "figures")
    # keep_last=1: checkpoints 4 and 8 were deleted; only 12 and the final adapter are saved
    assert "step 4, step 8" in figures.split("no longer on disk")[1], figures
    assert "step 4" not in figures.split("checkpoints saved")[1].split("\n")[0], figures

    # Readable settings: a table by section, the dataset by name and version number.
    page.locator("#job-config-section > button.label-wrap").click()
    settings_text = wait_until(lambda: "tasks v1" in (s := page.inner_text("#job-config")) and s, 10, 0.2, "settings")
    assert "Learning rate" in settings_text and "dataset_version_id" not in settings_text
    assert '"learning_rate"' in page.inner_text("#job-config-json")
    page.locator("#job-smooth input").check()
    wait_until(lambda: page.evaluate(
        "() => document.querySelector('#loss-plot .js-plotly-plot').data[3].visible === true"), 5, 0.2, "smoothed line")
    shot(page, "jobs-finished")

    # A second run with another learning rate, then both side by side.
    first = jobs.get_job(ctx, 1)
    config = {k: v for k, v in first.config.items() if k != "version"}
    config["training"] = {**config["training"], "learning_rate": 0.01}
    second = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), config, preset="", name="faster lr")
    wait_finished(ctx, second.id, processes)
    open_tab(page, "Compare")
    picker = page.locator("#compare-jobs input")
    for name in ("1: ", "2: faster lr"):
        picker.click()
        page.get_by_role("option", name=re.compile("^" + re.escape(name))).click()
    page.keyboard.press("Escape")
    try:
        wait_until(lambda: table_rows(page, "#compare-diff") >= 1, 60, 0.3, "the settings that differ")
    except AssertionError:
        shot(page, "compare-failed")
        raise
    diff = page.inner_text("#compare-diff")
    assert "Learning rate" in diff and "0.01" in diff and "Batch size" not in diff, diff
    summary = page.inner_text("#compare-summary")
    assert "faster lr" in summary and "tasks v1" in summary
    traces = wait_until(lambda: page.evaluate(
        "() => { const p = document.querySelector('#compare-plot .js-plotly-plot'); return p && p.data.map(t => t.meta); }"
    ), 30, 0.3, "the compare plot")
    assert {"train-1", "train-2", "eval-1", "eval-2", "exact-1", "exact-2"} <= set(traces), traces
    page.locator("#compare-axis").get_by_text("trained tokens").click()
    wait_until(lambda: "trained tokens" in page.inner_text("#compare-plot"), 15, 0.3, "the tokens axis")
    assert "tab=compare" in query(page)
    shot(page, "compare")

    # Two runs have finished on this worker: the estimate now rests on them. (The page was
    # reloaded: the form is fresh, only the tab, job and dataset came back from the URL.)
    open_tab(page, "Train")
    page.locator("#base-model textarea").fill(str(tiny_model_dir))
    page.locator("#base-model textarea").press("Tab")
    try:
        plan = wait_until(lambda: "measured on" in (text := page.inner_text("#train-plan")) and text, 60, 0.3,
                          "a measured estimate")
    except AssertionError:
        shot(page, "train-failed")
        raise AssertionError(page.inner_text("#train-plan"))
    shot(page, "train-measured")
    assert not errors, errors
    print(f"badge states seen: {sorted(seen, key=str)}; plan: {plan.splitlines()[-3:]}")
