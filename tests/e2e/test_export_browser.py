"""The Jobs tab's Export panel in a real headless Chromium, against the real `studio serve`
and a real worker: export a finished job as a merged model and as an adapter from a
checkpoint, see the checks each passed, and download the zip through the page's link."""

from __future__ import annotations

import zipfile

import httpx
import pytest

from studio.settings import Settings
from tests.conftest import wait_until
from tests.e2e.conftest import SHOTS

pytestmark = pytest.mark.e2e

QUICK = {
    "training": {"max_steps": 8, "batch_size": 8, "sample_every": 4, "save_every": 4, "max_length": 128,
                 "max_new_tokens": 8},
    "data": {"probe_count": 2, "exact_match_rows": 4},
}


def _card_status(page, export_id: int) -> str | None:
    badge = page.locator(f"#export-listing [data-export-id='{export_id}'] [data-export-status]")
    return badge.get_attribute("data-export-status") if badge.count() else None


def test_export_a_job_from_the_jobs_tab(tmp_path, start_server, start_worker, tiny_model_dir, alpaca_file, processes, page):
    from tests.conftest import make_settings

    access = {"model_dirs": [tiny_model_dir.parent]} if "model_dirs" in Settings.model_fields else {}
    settings = make_settings(tmp_path / "data", **access)
    start_worker(settings)
    url = start_server(settings)
    with httpx.Client(base_url=url, timeout=30) as client:
        dataset = client.post("/api/datasets", files={"file": (alpaca_file.name, alpaca_file.read_bytes())}).json()
        job = client.post("/api/jobs", json={"dataset_id": dataset["id"], "base_model": str(tiny_model_dir), "config": QUICK})
        job_id = job.json()["id"]
        wait_until(lambda: client.get(f"/api/jobs/{job_id}").json()["status"] == "succeeded", 180, 0.5, "the job")

    page.goto(url)
    page.get_by_role("tab", name="Jobs").click()
    page.locator("#job-status [data-status='succeeded']").wait_for()
    page.locator("#export-panel").scroll_into_view_if_needed()
    # The final result is offered first; the checkpoints follow.
    source = page.locator("#export-source input")
    wait_until(lambda: source.input_value() == "Final result", 20, 0.2, "the final result as the export source")
    page.locator("#export-kind").get_by_text("Merged model").click()
    page.click("#export-start")
    page.locator("#export-message .notice-ok").wait_for()
    assert "Export #1 queued" in page.inner_text("#export-message")
    try:
        wait_until(lambda: _card_status(page, 1) == "succeeded", 180, 0.3, "the merged export to be checked")
    except AssertionError:
        raise AssertionError(f"{page.inner_text('#export-listing')}\n{processes.logs()}") from None
    card = page.locator("#export-listing [data-export-id='1']")
    assert "logits within" in card.inner_text() and "same greedy answers on 100% of 4 prompts" in card.inner_text()

    # GGUF shows its precision choice; the adapter of a checkpoint needs none.
    page.locator("#export-kind").get_by_text("GGUF").click()
    page.locator("#export-quantization").wait_for()
    page.locator("#export-kind").get_by_text("Adapter").click()
    source.click()
    page.get_by_role("option", name="Checkpoint at step 4").click()
    wait_until(lambda: source.input_value() == "Checkpoint at step 4", 10, 0.2, "the checkpoint as the export source")
    page.wait_for_timeout(1500)  # a dashboard tick or two: the pick must survive them
    assert source.input_value() == "Checkpoint at step 4"
    page.click("#export-start")
    wait_until(lambda: _card_status(page, 2) == "succeeded", 180, 0.3, "the checkpoint's adapter export")
    assert "job-1/checkpoint-4" in page.inner_text("#export-listing [data-export-id='2']")
    page.screenshot(path=str(SHOTS / "studio-e2e-export.png"), full_page=True)

    # The download link streams the zip from the artifact store.
    with page.expect_download() as info:
        card.locator("a.export-download").click()
    download = info.value
    assert download.suggested_filename == "job-1-merged.zip"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
    assert "job-1-merged/model.safetensors" in names and "job-1-merged/tokenizer.json" in names
