"""The Chat tab in a real headless Chromium, against real `studio serve`, worker and
`studio infer` processes: a short demo job, then Chat opened from the Jobs tab with the
base and the job's result preselected, a held-out demo question sent once, and both
columns answering side by side."""

from __future__ import annotations

import json

import httpx
import pytest

from studio.core.demo import demo_dataset
from tests.chat_support import start_studio
from tests.conftest import make_settings, wait_until
from tests.e2e.conftest import SHOTS

pytestmark = pytest.mark.e2e

SHORT_DEMO = {
    "training": {"max_steps": 30, "batch_size": 8, "sample_every": 30, "save_every": 0, "max_length": 128,
                 "max_new_tokens": 8, "learning_rate": 3e-3},
    "data": {"probe_count": 2, "exact_match_rows": 4},
}


def test_chat_with_a_demo_job_side_by_side(tmp_path, start_worker, processes, page):
    settings = make_settings(tmp_path / "data")
    start_worker(settings)
    url, _, _ = start_studio(processes, settings)
    rows = demo_dataset(200, seed=5)
    held_out = demo_dataset(20, seed=99)[0]
    with httpx.Client(base_url=url, timeout=30) as client:
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        dataset = client.post("/api/datasets", files={"file": ("demo.jsonl", body)}).json()
        job_id = client.post("/api/jobs", json={"dataset_id": dataset["id"], "base_model": "demo",
                                                "config": SHORT_DEMO}).json()["id"]
        wait_until(lambda: client.get(f"/api/jobs/{job_id}").json()["status"] == "succeeded", 240, 0.5, "the job")

    page.goto(url)
    page.get_by_role("tab", name="Jobs").click()
    page.locator("#job-status [data-status='succeeded']").wait_for()
    page.click("#job-chat")
    # Chat opens with the base and the job's final result, one column each.
    page.locator("#chat-title-1").get_by_text(f"job-{job_id}").wait_for()
    page.locator("#chat-title-0").get_by_text("demo", exact=True).wait_for()
    assert page.locator("#chat-column-2").is_hidden()

    question = held_out["instruction"] + (f"\n\n{held_out['input']}" if held_out["input"] else "")
    page.fill("#chat-prompt textarea", question)
    page.click("#chat-send")
    for column in (0, 1):
        bot = page.locator(f"#chat-box-{column} .bot")
        bot.first.wait_for(timeout=60_000)
        wait_until(lambda: "tokens/s" in page.inner_text(f"#chat-figures-{column}"), 60, 0.2,
                   f"column {column} to finish")
    answers = [page.locator(f"#chat-box-{c} .bot").last.inner_text().strip() for c in (0, 1)]
    assert all(answers), answers
    assert held_out["instruction"] in page.locator("#chat-box-1 .user").first.inner_text()
    page.locator("#chat-stats").get_by_text("latency p50").wait_for()
    page.screenshot(path=str(SHOTS / "studio-e2e-chat.png"), full_page=True)

    # Multi-turn: a second question, each column keeps its own history.
    page.fill("#chat-prompt textarea", "Which number comes just before 10?")
    page.click("#chat-send")
    for column in (0, 1):
        wait_until(lambda: page.locator(f"#chat-box-{column} .bot").count() == 2
                   and "tokens/s" in page.inner_text(f"#chat-figures-{column}"), 60, 0.2, "the second replies")
    assert page.locator("#chat-box-1 .user").count() == 2
    page.click("#chat-clear")
    wait_until(lambda: page.locator("#chat-box-0 .bot").count() == 0, 20, 0.2, "the columns to clear")
