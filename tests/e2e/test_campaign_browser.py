"""A blind rating campaign in a real headless Chromium on the real `studio serve`: a trainer
starts a campaign on a tiny base against its fine-tune (REST), the answers are written by
the evaluation run (the worker's code, here), two raters log in separately and work
through their queues on the /rate page, preferring the fine-tune's answer; the
leaderboard puts the fine-tune ahead. The page never shows a model's name."""

from __future__ import annotations

import json

import httpx
import pytest

from studio.db import session_scope
from studio.models import Campaign, CampaignItem
from studio.services import accounts
from studio.services.context import StudioContext
from tests.chat_support import train_here
from tests.e2e.conftest import CHROMIUM_ARGS, SHOTS

pytestmark = [pytest.mark.e2e, pytest.mark.db, pytest.mark.slow]
PASSWORD = "correct horse battery"
PROMPTS = ["Which word comes last in the input?\n\nred fox owl", "Join the words with hyphens.\n\nred sun moon",
           "Which number comes just before 41?", "Repeat the word.\n\nlake"]


def _rate_queue(page, url, name, ctx, campaign_id, fine_tune, models) -> int:
    """Log in as `name` and pick the fine-tune's answer until the queue is empty."""
    page.goto(url + "/")
    page.wait_for_url("**/login**")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_url("**/rate/**")
    prompt_box = page.locator("#rater-prompt textarea")
    prompt_box.wait_for()
    rated = 0
    while True:
        prompt = prompt_box.input_value()
        with session_scope(ctx.engine) as session:
            item = session.query(CampaignItem).filter(CampaignItem.campaign_id == campaign_id,
                                                      CampaignItem.prompt == prompt).one()
            side = "a" if item.model_a == fine_tune else "b"
        body = page.locator("body").inner_text()
        assert not any(m in body for m in models) and "job-" not in body
        if rated == 0:  # a score on the way, once
            page.locator(f"#rater-score-{side}-0 label").filter(has_text="5").click()
            page.screenshot(path=str(SHOTS / f"campaign-{name}-item.png"), full_page=True)
        page.locator(f"#rater-vote-{side}").click()
        rated += 1
        page.wait_for_function(
            """([previous]) => {
                 const box = document.querySelector('#rater-prompt textarea');
                 const queue = document.querySelector('#rater-queue');
                 return (queue && queue.innerText.includes('rated everything')) || (box && box.value !== previous);
               }""", arg=[prompt], timeout=30_000)
        if "rated everything" in page.locator("#rater-queue").inner_text():
            page.screenshot(path=str(SHOTS / f"campaign-{name}-done.png"), full_page=True)
            return rated


def test_two_raters_rate_in_the_browser_and_the_fine_tune_leads(settings, start_server, alpaca_file,
                                                               tiny_model_dir, page):
    from worker import evaluate

    ctx = StudioContext.from_settings(settings)
    job_id = train_here(ctx, alpaca_file, str(tiny_model_dir))
    models = [str(tiny_model_dir), f"job-{job_id}"]
    for name, role in (("tess", "trainer"), ("rhea", "rater"), ("remy", "rater")):
        accounts.add_user(ctx.engine, name, role, PASSWORD)
    token = accounts.create_token(ctx.engine, "tess")
    url = start_server(settings)
    trainer = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    created = trainer.post("/api/campaigns", json={
        "name": "fine-tune vs base", "models": models, "prompts": PROMPTS, "mode": "pairwise",
        "ratings_per_item": 2, "sampling": {"max_tokens": 12, "temperature": 1.0, "seed": 1}})
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    with session_scope(ctx.engine) as session:
        eval_id = session.get(Campaign, campaign_id).eval_id
    assert evaluate.run(settings, eval_id) == "succeeded"

    rated = {"rhea": _rate_queue(page, url, "rhea", ctx, campaign_id, models[1], models)}
    # The second rater in a browser of their own (a fresh context: no shared cookie).
    second = page.context.browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    second.set_default_timeout(30_000)
    rated["remy"] = _rate_queue(second, url, "remy", ctx, campaign_id, models[1], models)
    assert rated == {"rhea": len(PROMPTS), "remy": len(PROMPTS)}

    board = trainer.get(f"/api/campaigns/{campaign_id}/leaderboard").json()
    assert [m["model"] for m in board["models"]] == [models[1], models[0]]
    top = board["models"][0]
    assert (top["wins"], top["losses"], top["n"], top["rank"]) == (2 * len(PROMPTS), 0, 2 * len(PROMPTS), 1)
    assert board["agreement"]["agreed_share"] == 1.0
    progress = trainer.get(f"/api/campaigns/{campaign_id}").json()
    assert progress["ratings_per_rater"] == {"rhea": len(PROMPTS), "remy": len(PROMPTS)}
    # Each rater's one score (helpfulness 5 for the fine-tune's answer) was stored with its vote.
    raw = [json.loads(line) for line in trainer.get(f"/api/campaigns/{campaign_id}/export",
                                                    params={"format": "jsonl"}).text.splitlines()]
    scored = [r for r in raw if r["scores"]]
    assert len(scored) == 2
    for r in scored:
        side = "A" if r["model_a"] == models[1] else "B"
        assert r["scores"] == {side: {"helpfulness": 5}}
    trainer.close()
