"""Rating campaigns end to end on the real `studio serve`: a trainer starts a campaign on a
tiny base and its fine-tune, the evaluation run writes the answers (the real worker code,
in this process), two raters work through their queues over REST and a third through the
/rate page's Gradio events; every byte a rater receives is checked for anything that
names a model; the leaderboard puts the fine-tune ahead; the votes become DPO data and a
dataset. Then the rules: unassigned items, replays, roles, bad input. The tests share one
campaign and run in file order (the exports read the votes the raters' tests cast)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections import Counter

import httpx
import pytest

from studio.db import engine_for, session_scope
from studio.models import Campaign, CampaignItem, EvalRow
from studio.services import accounts
from studio.services import campaigns as campaign_service
from studio.services.context import StudioContext
from tests.chat_support import train_here
from tests.conftest import make_settings, server_starter

pytestmark = [pytest.mark.db, pytest.mark.slow]

PROMPTS = [f"Which word comes last in the input?\n\nred fox {w}" for w in
           ("owl", "cat", "dog", "sun", "moon", "tree", "lake", "rock", "star", "leaf")]
CRITERIA = ["helpfulness", "accuracy"]
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, module_processes, alpaca_file, tiny_model_dir):
    settings = make_settings(tmp_path_factory.mktemp("campaigns") / "data")
    ctx = StudioContext.from_settings(settings)
    job_id = train_here(ctx, alpaca_file, str(tiny_model_dir))
    tokens = {}
    for name, role in (("trainer1", "trainer"), ("rater1", "rater"), ("rater2", "rater"), ("rater3", "rater"),
                       ("admin1", "admin")):
        accounts.add_user(ctx.engine, name, role, PASSWORD)
        tokens[name] = accounts.create_token(ctx.engine, name)
    url = server_starter(module_processes)(settings)
    return ctx, url, tokens, [str(tiny_model_dir), f"job-{job_id}"]


def client(url, tokens, who) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[who]}"}, timeout=60)


class Recorder:
    """Every byte a rater receives: status lines' bodies and headers."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def keep(self, response: httpx.Response) -> httpx.Response:
        self.chunks.append(json.dumps(dict(response.headers)).encode())
        self.chunks.append(response.content)
        return response

    def forbidden_in(self, needles: list[str]) -> list[str]:
        blob = b"\n".join(self.chunks).lower()
        return [n for n in needles if n.lower().encode() in blob]


def generate(ctx, campaign_id):
    """Run the campaign's evaluation run with the worker's own code, here."""
    from worker import evaluate

    with session_scope(ctx.engine) as session:
        eval_id = session.get(Campaign, campaign_id).eval_id
    assert evaluate.run(ctx.settings, eval_id) != "skipped"


def fine_tune_side(ctx, item_id, fine_tune):
    with session_scope(ctx.engine) as session:
        item = session.get(CampaignItem, item_id)
        return "A" if item.model_a == fine_tune else "B"


@pytest.fixture(scope="module")
def campaign(studio):
    ctx, url, tokens, models = studio
    with client(url, tokens, "trainer1") as trainer:
        created = trainer.post("/api/campaigns", json={
            "name": f"{models[1]} against its base", "models": models, "prompts": PROMPTS, "mode": "both",
            "criteria": CRITERIA, "ratings_per_item": 3, "sampling": {"max_tokens": 12, "temperature": 1.0, "seed": 1}})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "generating" and body["models"] == models
    # Raters wait while the answers are written.
    with client(url, tokens, "rater1") as rater:
        waiting = rater.get(f"/api/campaigns/{body['id']}/next")
        assert waiting.status_code == 409 and "still being written" in waiting.json()["detail"]
        assert rater.get("/api/rating/campaigns").json()[0]["status"] == "preparing"
    generate(ctx, body["id"])
    return body["id"]


# --- the campaign, rated ----------------------------------------------------------------


def test_once_the_answers_are_written_the_items_hold_them(studio, campaign):
    ctx, url, tokens, models = studio
    with client(url, tokens, "trainer1") as trainer:
        progress = trainer.get(f"/api/campaigns/{campaign}").json()
    assert progress["status"] == "open" and progress["items"] == len(PROMPTS)
    assert progress["ratings_wanted"] == 3 * len(PROMPTS) and progress["ratings"] == 0
    # The prompt a rater sees is exactly the one typed, with the two answers the run wrote.
    with session_scope(ctx.engine) as session:
        items = session.query(CampaignItem).filter(CampaignItem.campaign_id == campaign).all()
        rows = {r.prompt: r for r in session.query(EvalRow).filter(EvalRow.eval_id == progress["generation"]["eval_id"])}
        for item in items:
            assert {item.model_a, item.model_b} == set(models)
            assert item.answer_a == rows[item.prompt].outputs[item.model_a]
            assert item.answer_b == rows[item.prompt].outputs[item.model_b]
    assert sorted(i.prompt for i in items) == sorted(PROMPTS)


def test_two_raters_rate_blind_and_the_fine_tune_leads(studio, campaign):
    ctx, url, tokens, models = studio
    fine_tune = models[1]
    recorder = Recorder()
    seen = {"rater1": [], "rater2": []}
    with client(url, tokens, "rater1") as r1, client(url, tokens, "rater2") as r2:
        raters = {"rater1": r1, "rater2": r2}
        recorder.keep(r1.get("/api/rating/campaigns"))
        # rater2 cannot rate the item rater1 was just given.
        first = recorder.keep(r1.get(f"/api/campaigns/{campaign}/next")).json()
        refused = recorder.keep(r2.post(f"/api/campaigns/{campaign}/ratings",
                                        json={"item_id": first["item_id"], "winner": "A",
                                              "scores": {"A": {c: 3 for c in CRITERIA}, "B": {c: 3 for c in CRITERIA}}}))
        assert refused.status_code == 403 and "item_id" in refused.json()["detail"]
        # Asking again before rating gives the same item back (a reload loses nothing).
        assert recorder.keep(r1.get(f"/api/campaigns/{campaign}/next")).json()["item_id"] == first["item_id"]
        done = {name: False for name in raters}
        turn = 0
        while not all(done.values()):
            name = list(raters)[turn % 2]
            turn += 1
            if done[name]:
                continue
            nxt = recorder.keep(raters[name].get(f"/api/campaigns/{campaign}/next"))
            if nxt.status_code == 204:
                done[name] = True
                continue
            item = nxt.json()
            assert set(item) >= {"item_id", "prompt", "responses"}
            assert [r["label"] for r in item["responses"]] == ["A", "B"]
            assert item["prompt"] in PROMPTS
            seen[name].append(item["item_id"])
            good = fine_tune_side(ctx, item["item_id"], fine_tune)
            bad = "B" if good == "A" else "A"
            # rater1 always prefers the fine-tune; rater2 mostly, with a tie now and then.
            winner = good if name == "rater1" or len(seen[name]) % 4 else "tie"
            body = {"item_id": item["item_id"], "winner": winner, "comment": "",
                    "scores": {good: {c: 5 for c in CRITERIA}, bad: {c: 2 for c in CRITERIA}}}
            stored = recorder.keep(raters[name].post(f"/api/campaigns/{campaign}/ratings", json=body))
            assert stored.status_code == 201, stored.text
            # The same POST replayed changes nothing; a different one is refused.
            replay = recorder.keep(raters[name].post(f"/api/campaigns/{campaign}/ratings", json=body))
            assert replay.status_code == 200 and replay.json()["id"] == stored.json()["id"]
            changed = recorder.keep(raters[name].post(f"/api/campaigns/{campaign}/ratings",
                                                      json={**body, "winner": "both_bad"}))
            assert changed.status_code == 409
        recorder.keep(r1.get("/api/rating/campaigns"))

    # Each rater got every item once (3 wanted per item, only 2 raters so far).
    for name, items in seen.items():
        assert len(items) == len(set(items)) == len(PROMPTS), (name, items)
    needles = [*models, *(m.rsplit("/", 1)[-1] for m in models), "checkpoint", "job-", "job_id",
               str(ctx.settings.artifacts_root), str(ctx.settings.data_dir), "trainer1"]
    assert recorder.forbidden_in(needles) == []

    with client(url, tokens, "trainer1") as trainer:
        board = trainer.get(f"/api/campaigns/{campaign}/leaderboard").json()
        progress = trainer.get(f"/api/campaigns/{campaign}").json()
        # The check can fail: the trainer's view of the same campaign names the models.
        control = Recorder()
        control.keep(trainer.get(f"/api/campaigns/{campaign}"))
        assert set(models) <= set(control.forbidden_in(needles))
    assert progress["ratings"] == 2 * len(PROMPTS) and progress["ratings_per_rater"] == {"rater1": 10, "rater2": 10}
    top, second = board["models"]
    assert top["model"] == fine_tune and top["rank"] == 1 and second["rank"] == 2
    # rater2 ties on their 4th and 8th items: 18 wins of 20 and 2 ties, clearly ahead
    assert top["ci_low"] > second["ci_high"]
    assert (top["wins"], top["losses"], top["ties"], top["n"]) == (18, 0, 2, 20)
    assert board["agreement"]["items_compared"] == len(PROMPTS)
    assert board["agreement"]["agreed_share"] == pytest.approx(0.8)
    assert board["agreement"]["reading"].startswith("alpha")
    likert = {(r["model"], r["criterion"]): r for r in board["likert"]}
    assert likert[(fine_tune, "helpfulness")]["mean"] == 5.0 and likert[(models[0], "accuracy")]["mean"] == 2.0


def _sse_events(client_: httpx.Client, prefix: str, session_hash: str, fn_index: int, data: list, recorder: Recorder):
    """Run one Gradio event over raw HTTP (join the queue, read its stream); returns the
    event's output data. Every byte of the answers goes to the recorder."""
    joined = recorder.keep(client_.post(f"{prefix}/gradio_api/queue/join", json={
        "fn_index": fn_index, "data": data, "session_hash": session_hash, "event_data": None, "trigger_id": None}))
    assert joined.status_code == 200, joined.text
    output = None
    with client_.stream("GET", f"{prefix}/gradio_api/queue/data", params={"session_hash": session_hash}) as stream:
        raw = b""
        for chunk in stream.iter_bytes():
            raw += chunk
            if b"process_completed" in raw and raw.endswith(b"\n\n"):
                break
        recorder.chunks.append(raw)
    for line in raw.decode().splitlines():
        if line.startswith("data:"):
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed":
                assert message.get("success"), message
                output = message["output"]["data"]
    return output


def test_the_rate_page_rates_blind_through_its_events(studio, campaign):
    """rater3 uses the /rate page: the page, its config and every event's stream hold
    nothing that names a model, and the vote it sends is stored."""
    ctx, url, tokens, models = studio
    recorder = Recorder()
    with client(url, tokens, "rater3") as rater:
        recorder.keep(rater.get("/", follow_redirects=True))
        config = recorder.keep(rater.get("/rate/config")).json()
        recorder.keep(rater.get("/rate/gradio_api/info"))
        fns = {dep["id"]: dep for dep in config["dependencies"]}
        names = {dep.get("api_name"): dep["id"] for dep in config["dependencies"]}
        session = uuid.uuid4().hex
        shown = _sse_events(rater, "/rate", session, names["open_rater_queue"], [], recorder)
        state_and_view = shown[1:]
        prompt = next(v for v in state_and_view if isinstance(v, dict) and v.get("value") in PROMPTS)["value"]
        assert prompt in PROMPTS
        n_inputs = len(fns[names["rate_a"]]["inputs"])
        # The state input is held by the server for this session: send None in its place.
        _sse_events(rater, "/rate", session, names["rate_a"], [None, "clear"] + ["4", "3"] + [None] * (n_inputs - 4),
                    recorder)
        recorder.keep(rater.get("/rate/", follow_redirects=True))
    needles = [*models, *(m.rsplit("/", 1)[-1] for m in models), "checkpoint", "job-",
               str(ctx.settings.artifacts_root), str(ctx.settings.data_dir)]
    assert recorder.forbidden_in(needles) == []
    # Scores were partial (mode "both" wants every criterion for both answers): nothing
    # stored, a warning shown. Then a full vote through the page is stored.
    with client(url, tokens, "trainer1") as trainer:
        per_rater = trainer.get(f"/api/campaigns/{campaign}").json()["ratings_per_rater"]
    assert "rater3" not in per_rater
    with client(url, tokens, "rater3") as rater:
        scores = ["5", "4"] + [None] * 6 + ["2", "1"] + [None] * 6
        _sse_events(rater, "/rate", session, names["rate_b"], [None, "B reads better"] + scores, recorder)
    with client(url, tokens, "trainer1") as trainer:
        raw = trainer.get(f"/api/campaigns/{campaign}/export", params={"format": "jsonl"}).text
    rows = [json.loads(line) for line in raw.splitlines()]
    mine = [r for r in rows if r["comment"] == "B reads better"]
    assert len(mine) == 1 and mine[0]["winner"] == "B"
    assert mine[0]["scores"] == {"A": {"helpfulness": 5, "accuracy": 4}, "B": {"helpfulness": 2, "accuracy": 1}}


# --- preference data ------------------------------------------------------------------------


def test_decided_pairs_export_as_dpo_and_save_as_a_dataset(studio, campaign):
    ctx, url, tokens, models = studio
    fine_tune = models[1]
    with client(url, tokens, "trainer1") as trainer:
        dpo = trainer.get(f"/api/campaigns/{campaign}/export", params={"format": "dpo"})
        raw_csv = trainer.get(f"/api/campaigns/{campaign}/export", params={"format": "csv"}).text
        saved = trainer.post(f"/api/campaigns/{campaign}/dataset", json={"name": "fine-tune preferences"})
    assert dpo.status_code == 200 and "attachment" in dpo.headers["content-disposition"]
    pairs = [json.loads(line) for line in dpo.text.splitlines()]
    assert pairs and all(set(p) == {"prompt", "chosen", "rejected"} for p in pairs)
    with session_scope(ctx.engine) as session:
        items = session.query(CampaignItem).filter(CampaignItem.campaign_id == campaign).all()
        answer = {(i.prompt, i.model_a): i.answer_a for i in items} | {(i.prompt, i.model_b): i.answer_b for i in items}
    ratings = list(csv.DictReader(io.StringIO(raw_csv)))
    votes = Counter((r["prompt"], r["winner_model"] or r["winner"]) for r in ratings)
    decided = {prompt for (prompt, _), n in votes.items()
               if n * 2 > sum(m for (p, _), m in votes.items() if p == prompt)}
    assert len(decided) >= len(PROMPTS) - 3  # rater2's two ties and rater3's one vote may undecide some
    decided -= {i.prompt for i in items if i.answer_a == i.answer_b}  # nothing to learn from those
    assert sorted(p["prompt"] for p in pairs) == sorted(decided)
    # The raters preferred the fine-tune: it is the chosen answer wherever one was decided.
    for p in pairs:
        assert p["chosen"] == answer[(p["prompt"], fine_tune)] and p["rejected"] == answer[(p["prompt"], models[0])]
        assert p["chosen"] != p["rejected"]
    assert len(ratings) == 2 * len(PROMPTS) + 1
    raters = Counter(r["rater"] for r in ratings)
    assert all(r.startswith("rater-") for r in raters) and not any(r in raw_csv for r in ("rater1", "rater2", "rater3"))
    assert sorted(raters.values()) == [1, 10, 10]  # pseudonyms are stable per rater
    assert saved.status_code == 201, saved.text
    dataset = saved.json()
    assert dataset["name"] == "fine-tune preferences" and dataset["row_count"] == len(pairs)


# --- rules --------------------------------------------------------------------------------


def test_roles_on_every_campaign_route(studio, campaign):
    _ctx, url, tokens, _models = studio
    trainer_only = [("GET", f"/api/campaigns/{campaign}"), ("GET", f"/api/campaigns/{campaign}/leaderboard"),
                    ("GET", "/api/campaigns"), ("GET", f"/api/campaigns/{campaign}/export"),
                    ("POST", "/api/campaigns")]
    rater_only = [("GET", f"/api/campaigns/{campaign}/next"), ("POST", f"/api/campaigns/{campaign}/ratings"),
                  ("GET", "/api/rating/campaigns")]
    with client(url, tokens, "rater1") as rater, client(url, tokens, "trainer1") as trainer, \
            client(url, tokens, "admin1") as admin:
        for method, path in trainer_only:
            assert rater.request(method, path, json={} if method == "POST" else None).status_code == 403, path
        for method, path in rater_only:
            assert trainer.request(method, path, json={} if method == "POST" else None).status_code == 403, path
        # Admins pass every rule (an admin may rate too).
        assert admin.get(f"/api/campaigns/{campaign}/leaderboard").status_code == 200
        assert admin.get(f"/api/campaigns/{campaign}/next").status_code in (200, 204)
        assert httpx.get(url + f"/api/campaigns/{campaign}/next").status_code == 401


@pytest.mark.parametrize("body,field", [
    ({"name": "x", "models": ["demo"], "prompts": ["hi"]}, "models"),
    ({"name": "x", "models": ["demo", "demo"], "prompts": ["hi"]}, "models"),
    ({"name": "x", "models": ["demo", "job-999"], "prompts": ["hi"]}, "models[1]"),
    ({"name": " ", "models": ["demo", "job-1"], "prompts": ["hi"]}, "name"),
    ({"name": "x", "models": ["demo", "job-1"], "prompts": ["hi"], "mode": "elo"}, "mode"),
    ({"name": "x", "models": ["demo", "job-1"], "prompts": ["hi"], "ratings_per_item": 0}, "ratings_per_item"),
    ({"name": "x", "models": ["demo", "job-1"], "prompts": ["hi"], "criteria": ["a", "a"]}, "criteria"),
    ({"name": "x", "models": ["demo", "job-1"], "prompts": ["hi"], "mode": "likert", "criteria": []}, "criteria"),
    ({"name": "x", "models": ["demo", "job-1"]}, "dataset_id"),
    ({"name": "x", "models": ["demo", "job-1"], "prompts": ["hi"], "colour": 1}, "colour"),
])
def test_bad_campaigns_get_a_4xx_naming_the_field(studio, body, field):
    _ctx, url, tokens, _models = studio
    with client(url, tokens, "trainer1") as trainer:
        response = trainer.post("/api/campaigns", json=body)
    assert response.status_code == 422, response.text
    assert any(e.startswith(field) for e in response.json()["errors"]), response.json()


@pytest.mark.parametrize("body,field", [
    ({"item_id": 1, "winner": "C"}, "winner"),
    ({"item_id": 0, "winner": "A"}, "item_id"),
    ({"item_id": 1, "winner": "A", "scores": {"C": {}}}, "scores"),
    ({"winner": "A"}, "item_id"),
])
def test_bad_ratings_get_a_4xx_naming_the_field(studio, campaign, body, field):
    _ctx, url, tokens, _models = studio
    with client(url, tokens, "rater1") as rater:
        response = rater.post(f"/api/campaigns/{campaign}/ratings", json=body)
    assert response.status_code == 422, response.text
    assert any(e.startswith(field) for e in response.json()["errors"]), response.json()


def test_scores_are_checked_against_the_campaign(studio, campaign):
    """Out-of-range scores and unknown criteria are named; an unknown campaign or item is a 404."""
    ctx, url, tokens, _models = studio
    with session_scope(ctx.engine) as session:
        item_id = session.query(CampaignItem).filter(CampaignItem.campaign_id == campaign).first().id
    with client(url, tokens, "rater1") as rater:
        bad = rater.post(f"/api/campaigns/{campaign}/ratings", json={
            "item_id": item_id, "winner": "A", "scores": {"A": {"helpfulness": 9, "charm": 3}}})
        # rater1 rated this item already, so the scores are checked before the replay rule.
        assert bad.status_code == 422, bad.text
        errors = bad.json()["errors"]
        assert any(e.startswith("scores.A.helpfulness") for e in errors)
        assert any(e.startswith("scores.A.charm") for e in errors)
        assert rater.get("/api/campaigns/999999/next").status_code == 404
        assert rater.post(f"/api/campaigns/{campaign}/ratings",
                          json={"item_id": 999999, "winner": "A"}).status_code == 404


# --- the sides and the schedule, on the real item builder ----------------------------------


def test_over_400_items_a_model_is_a_half_the_time(tmp_path):
    campaign = Campaign(id=1, name="x", models=["X", "Y"], eval_id=1, seed=12345, salt="s")
    rows = [EvalRow(eval_id=1, index=i, prompt=f"p{i}", outputs={"X": "x", "Y": "y"}) for i in range(400)]
    items = campaign_service._make_items(campaign, rows)
    assert len(items) == 400
    x_is_a = sum(i.model_a == "X" for i in items)
    assert 0.43 * 400 <= x_is_a <= 0.57 * 400
    assert all((i.answer_a, i.answer_b) == (("x", "y") if i.model_a == "X" else ("y", "x")) for i in items)


def test_four_contestants_meet_equally_often():
    models = ["m0", "m1", "m2", "m3"]
    campaign = Campaign(id=1, name="x", models=models, eval_id=1, seed=7, salt="s", pairs_per_prompt=2)
    rows = [EvalRow(eval_id=1, index=i, prompt=f"p{i}", outputs={m: m for m in models}) for i in range(60)]
    pairs = Counter(frozenset((i.model_a, i.model_b)) for i in campaign_service._make_items(campaign, rows))
    assert len(pairs) == 6 and set(pairs.values()) == {20}
