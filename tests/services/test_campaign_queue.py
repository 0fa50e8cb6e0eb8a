"""The raters' queue under concurrency, through the campaigns service on a real DB: many
raters in threads of one process (as in one web process) never get an item twice, no item
is handed out more often than it wants ratings, and every item is filled. Reads do not
wait for the queue's turn (the writes' lock): a reload or a replayed rating is answered
while another request is writing."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlmodel import select

from studio.db import session_scope
from studio.models import Campaign, CampaignAssignment, CampaignItem, EvalRow, EvalRun, JobStatus, Rating
from studio.services import campaigns

pytestmark = pytest.mark.db

MODELS = ["m0", "m1", "m2", "m3"]
CRITERIA = ["helpfulness"]


def open_campaign(ctx, prompts: int, ratings_per_item: int) -> int:
    """A campaign whose answers are already written (a succeeded evaluation run), opened."""
    with session_scope(ctx.engine) as session:
        run = EvalRun(models=MODELS, specs=[], split="all", row_count=prompts, status=JobStatus.succeeded, progress=1.0)
        session.add(run)
        session.flush()
        for i in range(prompts):
            session.add(EvalRow(eval_id=run.id, index=i, prompt=f"prompt {i}",
                                outputs={m: f"{m} answers {i}" for m in MODELS}))
        campaign = Campaign(name="queue", models=MODELS, mode="both", criteria=CRITERIA,
                            ratings_per_item=ratings_per_item, eval_id=run.id, seed=3, salt="s")
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
    assert campaigns.refresh(ctx, campaign_id) == "open"
    return campaign_id


def vote(item_id: int) -> campaigns.RatingRequest:
    return campaigns.RatingRequest(item_id=item_id, winner="A", scores={s: {"helpfulness": 4} for s in "AB"})


def test_raters_in_threads_fill_every_item_once_each(ctx):
    campaign_id = open_campaign(ctx, prompts=30, ratings_per_item=3)
    raters = [f"rater{k}" for k in range(8)]
    got: dict[str, list[int]] = {r: [] for r in raters}
    errors: list[BaseException] = []
    start = threading.Barrier(len(raters))

    def rate_all(rater: str) -> None:
        try:
            start.wait()
            while (item := campaigns.next_item(ctx, campaign_id, rater)) is not None:
                got[rater].append(item["item_id"])
                stored, created = campaigns.submit_rating(ctx, campaign_id, rater, vote(item["item_id"]))
                assert created
        except BaseException as exc:  # noqa: BLE001  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=rate_all, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for rater, items in got.items():
        assert len(items) == len(set(items)), f"{rater} got an item twice"
    with session_scope(ctx.engine) as session:
        assigned = Counter(session.exec(select(CampaignAssignment.item_id)
                                        .where(CampaignAssignment.campaign_id == campaign_id)).all())
        rated = Counter(session.exec(select(Rating.item_id).where(Rating.campaign_id == campaign_id)).all())
    assert len(rated) == 30 and set(rated.values()) == {3}  # every item filled, none over
    assert assigned == rated


def test_the_last_slot_goes_to_one_rater(ctx):
    campaign_id = open_campaign(ctx, prompts=1, ratings_per_item=1)
    first = campaigns.next_item(ctx, campaign_id, "rater1")
    assert first is not None
    assert campaigns.next_item(ctx, campaign_id, "rater2") is None  # held for rater1
    assert campaigns.next_item(ctx, campaign_id, "rater1")["item_id"] == first["item_id"]  # a reload


def test_reads_do_not_wait_for_the_queues_turn(ctx):
    """A rater's reload (their item given back) and a replayed rating need no write: they
    are answered while another request holds the turn (before, they queued behind it)."""
    campaign_id = open_campaign(ctx, prompts=4, ratings_per_item=2)
    pending = campaigns.next_item(ctx, campaign_id, "rater1")
    rated = campaigns.next_item(ctx, campaign_id, "rater2")
    campaigns.submit_rating(ctx, campaign_id, "rater2", vote(rated["item_id"]))
    answers: dict[str, object] = {}

    def reads() -> None:
        answers["reload"] = campaigns.next_item(ctx, campaign_id, "rater1")
        answers["replay"] = campaigns.submit_rating(ctx, campaign_id, "rater2", vote(rated["item_id"]))

    with campaigns._QUEUE_TURN:  # a write in progress
        reader = threading.Thread(target=reads)
        reader.start()
        reader.join(10)
        finished_while_held = not reader.is_alive()
    reader.join(30)
    assert finished_while_held, "reads waited for the writers' turn"
    assert answers["reload"]["item_id"] == pending["item_id"]
    stored, created = answers["replay"]
    assert not created and stored["item_id"] == rated["item_id"]


def test_a_lapsed_hold_frees_its_slot_though_the_counts_were_just_read(ctx, monkeypatch):
    """The queue keeps each item's count in memory between reads: "nothing left" must
    still come from the database, or a slot freed since the last read stays lost."""
    monkeypatch.setattr(campaigns, "HOLD_SECONDS", 0.2)
    campaign_id = open_campaign(ctx, prompts=1, ratings_per_item=1)
    held = campaigns.next_item(ctx, campaign_id, "rater1")  # the counts now say: full
    time.sleep(0.3)  # rater1 walked away; their hold lapsed
    assert campaigns.next_item(ctx, campaign_id, "rater2")["item_id"] == held["item_id"]


def test_a_slot_taken_by_another_process_is_not_given_twice(ctx):
    """Another web process (or a row written since the counts were read) took an item's
    last slot: the assigning INSERT refuses it, and the queue reads again and moves on."""
    campaign_id = open_campaign(ctx, prompts=2, ratings_per_item=1)
    first = campaigns.next_item(ctx, campaign_id, "rater1")  # counts read now
    with session_scope(ctx.engine) as session:
        items = session.exec(select(CampaignItem.id).where(CampaignItem.campaign_id == campaign_id)).all()
        other = next(i for i in items if i != first["item_id"])
        session.add(CampaignAssignment(campaign_id=campaign_id, item_id=other, rater="elsewhere",
                                       assigned_at=time.time()))
    assert campaigns.next_item(ctx, campaign_id, "rater2") is None
    with session_scope(ctx.engine) as session:
        mine = session.exec(select(CampaignAssignment).where(CampaignAssignment.rater == "rater2")).all()
    assert mine == []
