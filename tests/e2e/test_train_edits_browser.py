"""The Train tab's Advanced settings in a real headless Chromium: the goal fills them in,
but a setting the user typed stays theirs when the goal, the model or the data changes,
until a preset fills everything from its recipe (issue 10: a late goal reply used to
overwrite what the user had just typed)."""

from __future__ import annotations

import pytest

from tests.conftest import make_settings, wait_until
from tests.e2e.conftest import SHOTS
from tests.e2e.test_browser import fill_number, open_tab

pytestmark = pytest.mark.e2e


def value(page, path: str) -> str:
    return page.locator(f"#cfg-{path.replace('.', '-')} input").input_value()


def test_a_typed_setting_survives_goal_changes_until_a_preset(tmp_path, start_server, tiny_model_dir, page):
    url = start_server(make_settings(tmp_path / "data"))
    page.goto(url)
    open_tab(page, "Train")
    page.locator("#base-model textarea").fill(str(tiny_model_dir))
    page.locator("#base-model textarea").press("Tab")
    page.locator("#train-advanced > button.label-wrap").click()
    page.locator("#cfg-adapter > button.label-wrap").click()  # folded at first
    # "quick try" without data: rank 8, two passes.
    wait_until(lambda: value(page, "adapter.r") == "8" and value(page, "training.epochs") == "2", 60, 0.2,
               "the quick-try settings")

    fill_number(page, "training.epochs", 5)
    page.locator("#train-goal").get_by_text("balanced", exact=True).click()
    wait_until(lambda: value(page, "adapter.r") == "16", 30, 0.2, "the balanced goal's rank")
    page.wait_for_timeout(1000)  # the step that puts the user's edits back runs just after
    assert value(page, "training.epochs") == "5", "the goal overwrote a setting the user typed"
    assert value(page, "training.learning_rate") == "0.0002"

    # Leaving the model box again (same model) asks the goal once more: the edit still holds.
    page.locator("#base-model textarea").click()
    page.locator("#base-model textarea").press("Tab")
    page.wait_for_timeout(1500)
    assert value(page, "training.epochs") == "5"
    page.screenshot(path=str(SHOTS / "studio-e2e-train-edits.png"), full_page=True)

    # A preset is a fixed recipe: it replaces everything, typed settings too, and from then on
    # the goal fills every field again.
    page.locator("#preset input").click()
    page.get_by_role("option", name="LoRA on one GPU", exact=True).click()
    wait_until(lambda: value(page, "training.epochs") == "3", 30, 0.2, "the preset's epochs")
    page.locator("#train-goal").get_by_text("best quality", exact=True).click()
    wait_until(lambda: value(page, "adapter.r") == "32", 30, 0.2, "the best-quality goal's rank")
    wait_until(lambda: value(page, "training.epochs") == "8", 10, 0.2, "the goal's epochs once the edit is forgotten")
