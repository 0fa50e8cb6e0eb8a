"""The trainer's campaign panel, its handlers on a real DB: refused starts name the field,
the leaderboard and agreement tables follow the votes, exports are real files, and the
decided pairs become a dataset. The campaign's answers are written straight into a
succeeded evaluation run (generation is tested in tests/test_campaigns.py)."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from studio.db import session_scope
from studio.models import Campaign, EvalRow, EvalRun, JobStatus
from studio.services import campaigns
from studio.services.campaigns import RatingRequest
from studio.ui import campaign_panel

pytestmark = pytest.mark.db


def _open_campaign(ctx, prompts=6) -> int:
    models = ["base", "tuned"]
    with session_scope(ctx.engine) as session:
        run = EvalRun(models=models, specs=[], split="all", row_count=prompts, status=JobStatus.succeeded, progress=1)
        session.add(run)
        session.flush()
        for i in range(prompts):
            session.add(EvalRow(eval_id=run.id, index=i, prompt=f"q{i}", outputs={"base": f"meh {i}", "tuned": f"{i}!"}))
        campaign = Campaign(name="panel", models=models, mode="both", criteria=["helpfulness"], ratings_per_item=2,
                            eval_id=run.id, seed=3, salt="x")
        session.add(campaign)
        session.flush()
        return campaign.id


def _rate_all(ctx, campaign_id, rater, prefer="tuned"):
    while (item := campaigns.next_item(ctx, campaign_id, rater)) is not None:
        with session_scope(ctx.engine) as session:
            from studio.models import CampaignItem

            row = session.get(CampaignItem, item["item_id"])
            good = "A" if row.model_a == prefer else "B"
        bad = "B" if good == "A" else "A"
        campaigns.submit_rating(ctx, campaign_id, rater, RatingRequest(
            item_id=item["item_id"], winner=good, scores={good: {"helpfulness": 5}, bad: {"helpfulness": 2}}))


def test_a_refused_start_names_the_field(ctx):
    html, runs = campaign_panel.start_campaign(ctx, "x", ["demo"], None, "hi", "pairwise", "helpfulness", 3, 10, 16)
    assert "cannot start" in html and "models" in html
    html, _ = campaign_panel.start_campaign(ctx, "x", ["demo", "job-77"], None, "hi", "pairwise", "a, a", 3, 10, 16)
    assert "criteria" in html


def test_the_board_follows_the_votes_then_exports_and_saves(ctx):
    campaign_id = _open_campaign(ctx)
    _, _, _, _, timer = campaign_panel.show_campaign(ctx, campaign_id)
    assert timer.active  # open, no rating yet
    _rate_all(ctx, campaign_id, "r1")
    _rate_all(ctx, campaign_id, "r2")
    status, ranks, likert, agreement, timer = campaign_panel.show_campaign(ctx, campaign_id)
    assert "12 of 12 ratings" in status and "r1 6" in status and not timer.active
    assert list(ranks["Model"]) == ["tuned", "base"] and list(ranks["Rank"]) == [1, 2]
    assert ranks.iloc[0]["Won / lost / tie / both bad"] == "12 / 0 / 0 / 0"
    assert set(likert["Criterion"]) == {"helpfulness"}
    assert "alpha" in agreement and "100% of 6 items" in agreement

    path = campaign_panel.export(ctx, "dpo", campaign_id)
    pairs = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert len(pairs) == 6 and all(p["chosen"].endswith("!") for p in pairs)
    csv_text = open(campaign_panel.export(ctx, "csv", campaign_id), encoding="utf-8").read()
    assert csv_text.count("\n") == 13 and "r1" not in csv_text.replace("rater-", "")

    saved = campaign_panel.save_dataset(ctx, campaign_id, "prefs")
    assert "Saved as dataset" in saved and "6 rows" in saved


def test_nothing_decided_is_not_saved(ctx):
    campaign_id = _open_campaign(ctx, prompts=2)
    assert "Not saved" in campaign_panel.save_dataset(ctx, campaign_id, "")


def test_the_lists_fill_in(ctx):
    campaign_id = _open_campaign(ctx)
    _models, _sets, listed = campaign_panel.refresh_choices(ctx, None, None, None)
    assert isinstance(listed, gr.Dropdown) and listed.value == campaign_id
