"""Rating campaigns: blind pairwise and Likert judgements of a few models' answers.

A campaign asks an evaluation run (studio.services.evals) for every contestant's answer
to every prompt, so raters never wait for generation. Once the run has succeeded the
campaign's items are made in one go: each prompt gets one (or more) contestant pairs from
a schedule where every pair meets about equally often, and a seeded per-item coin says
which answer is A. Model ids stay on the server: what a rater receives (`next_item`) is
the prompt, the two texts and their labels.

Raters ask for their next item; it is assigned to them (only assigned items can be rated,
none twice) and held for HOLD_SECONDS so two raters do not both take an item's last slot.
A rating is unique per (item, rater): the same POST replayed changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import secrets
import threading
import time
import weakref
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Float, Integer, String, bindparam, false, func, insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from studio.core import leaderboard as board_math
from studio.core.config import ConfigError
from studio.core.pairing import a_side, schedule_pairs
from studio.core.pairing import next_item as choose_item
from studio.db import session_scope
from studio.models import Campaign, CampaignAssignment, CampaignItem, EvalRow, EvalRun, JobStatus, Rating, utcnow
from studio.services import evals
from studio.services.context import NotFound, StudioContext
from studio.services.evals import EvalSampling

log = logging.getLogger(__name__)

DEFAULT_CRITERIA = ("helpfulness", "accuracy", "coherence", "safety")
MAX_CRITERIA = 8  # the rater page has this many score rows
MAX_CONTESTANTS = 8
HOLD_SECONDS = 30 * 60  # an assigned, unrated item stops counting toward its ratings after this
WINNERS = board_math.WINNERS
SIDES = ("A", "B")
# The queue's writes take turns within a web process: SQLite makes a writer that finds the
# file locked sleep in 1-100 ms steps (the tail of GET next with 20 raters). Only the
# writes: reads inside the turn made 20 raters queue behind each other's SELECTs. That two
# raters cannot both take an item's last slot is the assigning INSERT's own condition.
_QUEUE_TURN = threading.Lock()
NEXT_TRIES = 20  # choices of an item whose last slot someone else took meanwhile, then 409


class CampaignRefused(Exception):
    """The request is well-formed but not possible now (409), or not the caller's (403)."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


class CampaignRequest(BaseModel):
    """What POST /api/campaigns takes."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="What the trainer calls it (raters never see it)")
    models: evals.ModelIds = Field(min_length=2, max_length=MAX_CONTESTANTS,
                                   description="The contestants: demo, a base, job-N or job-N/checkpoint-S")
    prompts: Optional[list[str]] = Field(default=None, min_length=1, max_length=evals.MAX_ROWS,
                                         description="Typed prompts, one per item")
    dataset_id: Optional[int] = Field(default=None, ge=1, le=2**63 - 1, description="Prompts from this dataset")
    split: Literal["validation", "all"] = Field(default="validation", description="The dataset's held-out rows, or all")
    max_rows: int = Field(default=100, ge=1, le=evals.MAX_ROWS, description="Use at most this many prompts")
    mode: Literal["pairwise", "likert", "both"] = Field(
        default="pairwise", description="pairwise: pick A, B, tie or both bad; likert: score each answer 1-5; both")
    criteria: list[str] = Field(default_factory=lambda: list(DEFAULT_CRITERIA), max_length=MAX_CRITERIA,
                                description="What each answer is scored on, 1-5")
    ratings_per_item: int = Field(default=3, ge=1, le=50, description="Ratings wanted per item, from different raters")
    pairs_per_prompt: int = Field(default=1, ge=1, le=28, description="Contestant pairs shown per prompt")
    sampling: EvalSampling = Field(default_factory=EvalSampling)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("the name is empty")
        return name.strip()

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, criteria: list[str]) -> list[str]:
        cleaned = [c.strip() for c in criteria]
        for i, c in enumerate(cleaned):
            if not c or len(c) > 60:
                raise ValueError(f"criterion {i + 1} must be 1 to 60 characters")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("each criterion may appear once")
        return cleaned


class RatingRequest(BaseModel):
    """What POST /api/campaigns/{id}/ratings takes."""

    model_config = ConfigDict(extra="forbid")
    item_id: int = Field(ge=1, le=2**63 - 1)
    winner: Optional[Literal["A", "B", "tie", "both_bad"]] = None
    scores: dict[Literal["A", "B"], dict[str, int]] = Field(default_factory=dict,
                                                            description='{"A": {criterion: 1-5}, "B": {...}}')
    comment: str = Field(default="", max_length=5000)


# --- creating and opening -----------------------------------------------------------------


def create_campaign(ctx: StudioContext, request: CampaignRequest, user: Optional[str] = None) -> dict[str, Any]:
    """Start the evaluation run that writes the answers, and store the campaign."""
    if request.mode != "pairwise" and not request.criteria:
        raise ConfigError([f"criteria: a {request.mode} campaign needs at least one criterion to score"])
    try:
        generation = evals.EvalRequest(models=request.models, prompts=request.prompts, dataset_id=request.dataset_id,
                                       split=request.split, max_rows=request.max_rows, sampling=request.sampling)
    except ValidationError as exc:  # the same fields, named the same way
        raise ConfigError([f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]) from None
    run = evals.create_eval(ctx, generation, user=user)
    with session_scope(ctx.engine) as session:
        campaign = Campaign(
            name=request.name, models=run.models, mode=request.mode, criteria=request.criteria,
            ratings_per_item=request.ratings_per_item, pairs_per_prompt=request.pairs_per_prompt,
            eval_id=run.id, seed=secrets.randbelow(2**31), salt=secrets.token_hex(16), created_by=user or "",
        )
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
    return get_campaign(ctx, campaign_id)


def _load(session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return campaign


def refresh(ctx: StudioContext, campaign_id: int) -> str:
    """Open the campaign once its evaluation run has succeeded (making the items), or mark
    it failed with the run's reason. Safe to call from many requests at once: only the one
    whose conditional UPDATE wins makes the items. Returns the status."""
    with session_scope(ctx.engine) as session:
        campaign = _load(session, campaign_id)
        if campaign.status != "generating":
            return campaign.status
        run = session.get(EvalRun, campaign.eval_id)
        if run.status in (JobStatus.failed, JobStatus.cancelled):
            session.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "generating")
                            .values(status="failed", error=f"generating the answers {run.status.value}: "
                                                           f"{run.error or 'no reason given'}"))
            return "failed"
        if run.status != JobStatus.succeeded:
            return "generating"
        won = session.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "generating")
                              .values(status="open")).rowcount == 1
        if not won:
            return "open"
        rows = session.exec(select(EvalRow).where(EvalRow.eval_id == run.id).order_by(EvalRow.index)).all()
        for item in _make_items(campaign, rows):
            session.add(item)
    return "open"


def _make_items(campaign: Campaign, rows: list[EvalRow]) -> list[CampaignItem]:
    items = []
    for position, pairing in enumerate(schedule_pairs(len(rows), campaign.models, campaign.pairs_per_prompt,
                                                      seed=campaign.seed)):
        row = rows[pairing.prompt_index]
        a, b = (pairing.first, pairing.second) if a_side(campaign.seed, position) else (pairing.second, pairing.first)
        answer_a, answer_b = row.outputs.get(a), row.outputs.get(b)
        if answer_a is None or answer_b is None:
            continue  # a model wrote nothing for this row: nothing to compare
        items.append(CampaignItem(campaign_id=campaign.id, position=position, prompt=row.prompt, input=row.input,
                                  model_a=a, model_b=b, answer_a=answer_a, answer_b=answer_b))
    return items


def get_campaign(ctx: StudioContext, campaign_id: int) -> dict[str, Any]:
    """Progress, for the trainer: items, ratings received and wanted, ratings per rater."""
    refresh(ctx, campaign_id)
    with session_scope(ctx.engine) as session:
        campaign = _load(session, campaign_id)
        run = session.get(EvalRun, campaign.eval_id)
        items = session.exec(select(func.count()).select_from(CampaignItem)
                             .where(CampaignItem.campaign_id == campaign_id)).one()
        per_rater = dict(session.exec(select(Rating.rater, func.count()).where(Rating.campaign_id == campaign_id)
                                      .group_by(Rating.rater)).all())
        rated_items = session.exec(
            select(func.count(func.distinct(Rating.item_id))).where(Rating.campaign_id == campaign_id)).one()
        data = campaign.model_dump(exclude={"seed", "salt"})
    wanted = items * campaign.ratings_per_item
    ratings = sum(per_rater.values())
    return {**data, "items": items, "rated_items": rated_items, "ratings": ratings, "ratings_wanted": wanted,
            "progress": min(1.0, ratings / wanted) if wanted else 0.0, "ratings_per_rater": per_rater,
            "generation": {"eval_id": run.id, "status": run.status.value, "progress": run.progress,
                           "stage": run.stage}}


def list_campaigns(ctx: StudioContext, limit: int = 50) -> list[dict[str, Any]]:
    with session_scope(ctx.engine) as session:
        ids = session.exec(select(Campaign.id).order_by(Campaign.id.desc()).limit(max(1, min(limit, 200)))).all()
    return [get_campaign(ctx, i) for i in ids]


# --- the rater's side ---------------------------------------------------------------------
# Everything here answers a rater: it must never carry a model id, job id or path.


def rater_campaigns(ctx: StudioContext, rater: str) -> list[dict[str, Any]]:
    """The campaigns a rater can work on: id, how many they rated, whether any is left.
    No names: a trainer may have named a campaign after its models."""
    with session_scope(ctx.engine) as session:
        ids = session.exec(select(Campaign.id).where(Campaign.status.in_(["generating", "open"]))
                           .order_by(Campaign.id)).all()
    out = []
    for campaign_id in ids:
        status = refresh(ctx, campaign_id)
        with session_scope(ctx.engine) as session:
            campaign = _load(session, campaign_id)
            done = session.exec(select(func.count()).select_from(Rating).where(
                Rating.campaign_id == campaign_id, Rating.rater == rater)).one()
            mode, criteria = campaign.mode, list(campaign.criteria)
        out.append({"id": campaign_id, "status": "open" if status == "open" else "preparing", "rated": done,
                    "mode": mode, "criteria": criteria})
    return out


@dataclass(frozen=True)
class _Plan:
    """What the queue needs of an open campaign and that never changes once it is open
    (items are made in the same transaction that opens it, and are never edited)."""

    mode: str
    criteria: tuple[str, ...]
    ratings_per_item: int
    seed: int
    pairs: dict[int, frozenset]  # item id -> its (unordered) contestant pair


# Per engine (a test process opens many DBs with the same ids), per campaign id. Only open
# campaigns are kept, and open is final.
_PLANS: "weakref.WeakKeyDictionary[Any, dict[int, _Plan]]" = weakref.WeakKeyDictionary()
_PLANS_TURN = threading.Lock()

_CAMPAIGN, _ITEM, _ASSIGNED, _RATING = (Campaign.__table__, CampaignItem.__table__, CampaignAssignment.__table__,
                                        Rating.__table__)
# Built once: composing a statement costs more than SQLite takes to run it.
_MINE = (select(_ASSIGNED.c.item_id, _ASSIGNED.c.rated)
         .where(_ASSIGNED.c.campaign_id == bindparam("campaign_id"), _ASSIGNED.c.rater == bindparam("rater"))
         .order_by(_ASSIGNED.c.assigned_at, _ASSIGNED.c.id))
# Ratings each item has or is promised (assignments still held); items without any are 0.
_TAKEN = (select(_ASSIGNED.c.item_id, func.count())
          .where(_ASSIGNED.c.campaign_id == bindparam("campaign_id"),
                 or_(_ASSIGNED.c.rated, _ASSIGNED.c.assigned_at > bindparam("cutoff")))
          .group_by(_ASSIGNED.c.item_id))
# Assign the item only while it still has a free slot: the count and the INSERT are one
# statement, so a slot taken since the rater's choice is not taken twice.
_ASSIGN = insert(_ASSIGNED).from_select(
    ["campaign_id", "item_id", "rater", "assigned_at", "rated"],
    select(bindparam("campaign_id", type_=Integer), bindparam("item_id", type_=Integer),
           bindparam("rater", type_=String), bindparam("now", type_=Float), false())
    .where(select(func.count()).select_from(_ASSIGNED)
           .where(_ASSIGNED.c.item_id == bindparam("item_id", type_=Integer),
                  or_(_ASSIGNED.c.rated, _ASSIGNED.c.assigned_at > bindparam("cutoff", type_=Float)))
           .scalar_subquery() < bindparam("wanted", type_=Integer)))
_TEXTS = select(_ITEM.c.id, _ITEM.c.prompt, _ITEM.c.input, _ITEM.c.answer_a, _ITEM.c.answer_b).where(
    _ITEM.c.id == bindparam("item_id"))
_ASSIGNMENT = select(_ASSIGNED.c.id).where(_ASSIGNED.c.item_id == bindparam("item_id"),
                                           _ASSIGNED.c.rater == bindparam("rater"))
_STORED = select(_RATING.c.id, _RATING.c.item_id, _RATING.c.winner, _RATING.c.scores, _RATING.c.comment).where(
    _RATING.c.item_id == bindparam("item_id"), _RATING.c.rater == bindparam("rater"))
_STORE = insert(_RATING)
_MARK_RATED = update(_ASSIGNED).where(_ASSIGNED.c.id == bindparam("assignment_id")).values(rated=True)


def _plan(ctx: StudioContext, campaign_id: int) -> _Plan:
    """The open campaign's plan (read once per process), or CampaignRefused while it is not open."""
    known = _PLANS.get(ctx.engine, {}).get(campaign_id)
    if known is not None:
        return known
    status = refresh(ctx, campaign_id)
    if status == "generating":
        raise CampaignRefused("this campaign's answers are still being written; try again in a minute")
    if status != "open":
        raise CampaignRefused(f"this campaign is {status}: there is nothing to rate")
    with ctx.engine.connect() as conn:
        row = conn.execute(select(_CAMPAIGN.c.mode, _CAMPAIGN.c.criteria, _CAMPAIGN.c.ratings_per_item,
                                  _CAMPAIGN.c.seed).where(_CAMPAIGN.c.id == campaign_id)).one()
        items = conn.execute(select(_ITEM.c.id, _ITEM.c.model_a, _ITEM.c.model_b)
                             .where(_ITEM.c.campaign_id == campaign_id).order_by(_ITEM.c.id)).all()
    plan = _Plan(row.mode, tuple(row.criteria), row.ratings_per_item, row.seed,
                 {i: frozenset((a, b)) for i, a, b in items})
    with _PLANS_TURN:
        _PLANS.setdefault(ctx.engine, {})[campaign_id] = plan
    return plan


def _public_item(plan: _Plan, item, done: int) -> dict[str, Any]:
    """What a rater is sent for an item (a row of its id, prompt, input and answers)."""
    return {
        "item_id": item.id,
        "prompt": item.prompt,
        "input": item.input,
        "responses": [{"label": "A", "text": item.answer_a}, {"label": "B", "text": item.answer_b}],
        "mode": plan.mode,
        "criteria": list(plan.criteria),
        "rated": done,
    }


class _Taken:
    """Per campaign, how many ratings each item has or is promised, as this process last
    read them plus the assignments it made since. Only a hint for the choice: the INSERT
    still checks the slot, a lost slot reads afresh, and "nothing left" is said only after
    a fresh read. It is read again when older than TAKEN_TTL_S (other processes, expired
    holds)."""

    def __init__(self) -> None:
        self.turn = threading.Lock()
        self.counts: dict[int, int] = {}
        self.read_at = float("-inf")

    def get(self, conn, campaign_id: int, fresh: bool) -> dict[int, int]:
        now = time.monotonic()
        if fresh or now - self.read_at > TAKEN_TTL_S:
            counts = dict(conn.execute(_TAKEN, {"campaign_id": campaign_id, "cutoff": time.time() - HOLD_SECONDS}).all())
            with self.turn:
                self.counts, self.read_at = counts, now
        return self.counts

    def took(self, item_id: int) -> None:
        with self.turn:
            self.counts = {**self.counts, item_id: self.counts.get(item_id, 0) + 1}


TAKEN_TTL_S = 1.0
_TAKEN_SEEN: "weakref.WeakKeyDictionary[Any, dict[int, _Taken]]" = weakref.WeakKeyDictionary()


def _taken_for(ctx: StudioContext, campaign_id: int) -> _Taken:
    with _PLANS_TURN:
        return _TAKEN_SEEN.setdefault(ctx.engine, {}).setdefault(campaign_id, _Taken())


def next_item(ctx: StudioContext, campaign_id: int, rater: str) -> Optional[dict[str, Any]]:
    """The rater's next item (assigned to them now), or None when nothing is left for them.
    An item they were given and have not rated yet comes back first (a reload, a retry).

    20 raters polling at once share one web process, and SQLite one writer: the choice is
    made outside the queue's turn from the rater's own assignments and the items' counts
    (`_Taken`; the campaign's items and their pairs are read once per process); the turn
    holds one conditional INSERT."""
    plan = _plan(ctx, campaign_id)
    counts = _taken_for(ctx, campaign_id)
    fresh = False
    with ctx.engine.connect() as conn:
        for _ in range(NEXT_TRIES):
            mine = conn.execute(_MINE, {"campaign_id": campaign_id, "rater": rater}).all()
            done = sum(1 for m in mine if m.rated)
            pick = next((m.item_id for m in mine if not m.rated), None)
            if pick is not None:
                break
            taken = counts.get(conn, campaign_id, fresh)
            seen = Counter(plan.pairs[m.item_id] for m in mine)
            pick = choose_item(plan.pairs, taken, seen, plan.ratings_per_item, already=[m.item_id for m in mine],
                               seed=f"{plan.seed}:{rater}")
            if pick is None:
                if fresh:
                    return None
                fresh = True  # a hold may have lapsed since the counts were read
                continue
            conn.rollback()  # end the reads' transaction: the INSERT's count must see the latest
            try:
                with _QUEUE_TURN:
                    won = conn.execute(_ASSIGN, {"campaign_id": campaign_id, "item_id": pick, "rater": rater,
                                                 "now": time.time(), "cutoff": time.time() - HOLD_SECONDS,
                                                 "wanted": plan.ratings_per_item}).rowcount == 1
                    conn.commit()
            except IntegrityError:  # the same rater asked twice at once: the other request assigned it
                conn.rollback()
                continue
            if won:
                counts.took(pick)
                break
            fresh = True  # its last slot went to someone else since the counts were read
        else:
            raise CampaignRefused("the queue is busy: try again in a moment")
        item = conn.execute(_TEXTS, {"item_id": pick}).one()
    return _public_item(plan, item, done)


def _check_rating(plan: _Plan, request: RatingRequest) -> list[str]:
    problems = []
    if plan.mode in ("pairwise", "both") and request.winner is None:
        problems.append("winner: pick A, B, tie or both_bad")
    needs_scores = plan.mode in ("likert", "both")
    for side in SIDES:
        given = request.scores.get(side, {})
        for criterion, value in given.items():
            if criterion not in plan.criteria:
                problems.append(f"scores.{side}.{criterion}: not one of this campaign's criteria "
                                f"({', '.join(plan.criteria)})")
            elif not 1 <= value <= 5:
                problems.append(f"scores.{side}.{criterion}: a score is 1 to 5, not {value}")
        if needs_scores:
            problems += [f"scores.{side}.{c}: score every criterion, 1 to 5" for c in plan.criteria if c not in given]
    return problems


def submit_rating(ctx: StudioContext, campaign_id: int, rater: str, request: RatingRequest) -> tuple[dict[str, Any], bool]:
    """Store a rater's judgement of an item assigned to them. Returns (the stored rating,
    created): the same request replayed returns the stored one with created False; a
    different one for an item already rated is refused (409).

    The checks read outside the queue's turn (an assignment, once made, is never taken
    back); the turn holds only the INSERT and the assignment's UPDATE."""
    try:
        plan = _plan(ctx, campaign_id)
    except CampaignRefused:
        plan = None  # not open: no item of it was ever given to anyone
    if plan is None or request.item_id not in plan.pairs:
        raise NotFound(f"item_id: campaign {campaign_id} has no item {request.item_id}")
    key = {"item_id": request.item_id, "rater": rater}
    with ctx.engine.connect() as conn:
        assignment_id = conn.execute(_ASSIGNMENT, key).scalar()
        if assignment_id is None:
            raise CampaignRefused(f"item_id: item {request.item_id} was not given to you; "
                                  f"GET /api/campaigns/{campaign_id}/next gives your next one", status=403)
        problems = _check_rating(plan, request)
        if problems:
            raise ConfigError(problems)
        scores = {side: dict(request.scores[side]) for side in SIDES if request.scores.get(side)}
        existing = conn.execute(_STORED, key).first()
        if existing is None:
            conn.rollback()  # end the reads' transaction before writing
            try:
                with _QUEUE_TURN:
                    stored = conn.execute(_STORE, {"campaign_id": campaign_id, **key, "winner": request.winner,
                                                   "scores": scores, "comment": request.comment,
                                                   "created_at": utcnow()})
                    conn.execute(_MARK_RATED, {"assignment_id": assignment_id})
                    conn.commit()
                return {"id": stored.inserted_primary_key[0], "item_id": request.item_id,
                        "winner": request.winner, "scores": scores, "comment": request.comment}, True
            except IntegrityError:  # the same POST twice at once: the other one stored it
                conn.rollback()
                existing = conn.execute(_STORED, key).one()
    if (existing.winner, existing.scores, existing.comment) != (request.winner, scores, request.comment):
        raise CampaignRefused(f"item_id: you already rated item {request.item_id}; a rating is not changed")
    return {"id": existing.id, "item_id": existing.item_id, "winner": existing.winner, "scores": existing.scores,
            "comment": existing.comment}, False


# --- the trainer's side: leaderboard and exports -----------------------------------------


def _ratings(ctx: StudioContext, campaign_id: int) -> tuple[Campaign, list[tuple[Rating, CampaignItem]]]:
    with session_scope(ctx.engine) as session:
        campaign = _load(session, campaign_id)
        rows = session.exec(select(Rating, CampaignItem).join(CampaignItem, CampaignItem.id == Rating.item_id)
                            .where(Rating.campaign_id == campaign_id).order_by(Rating.id)).all()
        return campaign, [(r, i) for r, i in rows]


def leaderboard(ctx: StudioContext, campaign_id: int, rounds: int = 1000) -> dict[str, Any]:
    """Ratings with 95% intervals and ranks (best first), win rates, Likert means and
    rater agreement, from every rating so far."""
    refresh(ctx, campaign_id)
    campaign, rows = _ratings(ctx, campaign_id)
    votes = [board_math.Vote(item.id, r.rater, item.model_a, item.model_b, r.winner) for r, item in rows if r.winner]
    scores = [board_math.Score(item.id, r.rater, item.model_a if side == "A" else item.model_b, criterion, value)
              for r, item in rows for side, given in r.scores.items() for criterion, value in given.items()]
    board = board_math.build_leaderboard(votes, scores, models=campaign.models, rounds=rounds, seed=campaign.seed)
    return {
        "campaign_id": campaign_id,
        "votes": len(votes),
        "models": [{**asdict(m), "rating": round(m.rating, 1), "ci_low": round(m.ci_low, 1),
                    "ci_high": round(m.ci_high, 1)} for m in board.models],
        "win_rate": board.win_rate,
        "likert": [asdict(row) for row in board.likert],
        "agreement": asdict(board.agreement),
    }


def pseudonym(campaign: Campaign, rater: str) -> str:
    """A stable id per rater and campaign that does not reveal the account."""
    return "rater-" + hmac.new(campaign.salt.encode(), rater.encode(), hashlib.sha256).hexdigest()[:10]


def _joined_prompt(item: CampaignItem) -> str:
    return f"{item.prompt}\n\n{item.input}" if item.input else item.prompt


def _decided(ctx: StudioContext, campaign_id: int) -> list[tuple[CampaignItem, str, str]]:
    """(item, chosen, rejected) for each item where one answer won a strict majority of
    its votes (ties and "both bad" count against a decision). Two identical answers teach
    nothing and are left out."""
    _campaign, rows = _ratings(ctx, campaign_id)
    votes: dict[int, Counter] = defaultdict(Counter)
    items: dict[int, CampaignItem] = {}
    for rating, item in rows:
        if rating.winner:
            votes[item.id][rating.winner] += 1
            items[item.id] = item
    out = []
    for item_id, count in votes.items():
        item, total = items[item_id], sum(count.values())
        if item.answer_a == item.answer_b:
            continue
        if count["A"] * 2 > total:
            out.append((item, item.answer_a, item.answer_b))
        elif count["B"] * 2 > total:
            out.append((item, item.answer_b, item.answer_a))
    return out


def preference_pairs(ctx: StudioContext, campaign_id: int) -> list[dict[str, str]]:
    """The decided items as TRL's DPO rows: {prompt, chosen, rejected}."""
    return [{"prompt": _joined_prompt(item), "chosen": chosen, "rejected": rejected}
            for item, chosen, rejected in _decided(ctx, campaign_id)]


def dpo_jsonl(ctx: StudioContext, campaign_id: int) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in preference_pairs(ctx, campaign_id))


def save_as_dataset(ctx: StudioContext, campaign_id: int, name: Optional[str] = None):
    """The decided pairs as a new dataset: Alpaca rows whose output is the chosen answer,
    with the rejected one kept in a `rejected` field (the studio's dataset formats have no
    preference schema; the DPO file export has TRL's exact columns)."""
    from studio.services import datasets

    decided = _decided(ctx, campaign_id)
    if not decided:
        raise CampaignRefused("no item is decided yet: a pair needs one answer to win most of its votes")
    with session_scope(ctx.engine) as session:
        default_name = f"{_load(session, campaign_id).name} preferences"[:200]
    lines = [json.dumps({"instruction": item.prompt, "input": item.input, "output": chosen, "rejected": rejected},
                        ensure_ascii=False) for item, chosen, rejected in decided]
    dataset, _skipped = datasets.create_dataset(ctx, f"campaign-{campaign_id}-preferences.jsonl",
                                                "\n".join(lines).encode(), name=(name or "").strip() or default_name)
    return dataset


RAW_FIELDS = ("rating_id", "item_id", "rater", "prompt", "input", "model_a", "model_b", "answer_a", "answer_b",
              "winner", "winner_model", "scores", "comment", "created_at")


def raw_ratings(ctx: StudioContext, campaign_id: int) -> list[dict[str, Any]]:
    """Every rating with its item, raters as pseudonyms."""
    campaign, rows = _ratings(ctx, campaign_id)
    out = []
    for rating, item in rows:
        winner_model = {"A": item.model_a, "B": item.model_b}.get(rating.winner or "", "")
        out.append({"rating_id": rating.id, "item_id": item.id, "rater": pseudonym(campaign, rating.rater),
                    "prompt": item.prompt, "input": item.input, "model_a": item.model_a, "model_b": item.model_b,
                    "answer_a": item.answer_a, "answer_b": item.answer_b, "winner": rating.winner or "",
                    "winner_model": winner_model, "scores": rating.scores, "comment": rating.comment,
                    "created_at": rating.created_at.isoformat()})
    return out


def raw_ratings_text(ctx: StudioContext, campaign_id: int, fmt: str) -> str:
    rows = raw_ratings(ctx, campaign_id)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RAW_FIELDS)
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "scores": json.dumps(r["scores"], ensure_ascii=False)})
    return buffer.getvalue()
