"""Evaluation runs: metrics against hand-computed values; the evaluation set a run picks;
then through the real `studio serve` and a real Celery worker, a tiny job is trained and
its base, a checkpoint and its result are evaluated over REST: every row answered by
every model, perplexity equal to plain transformers + peft with the training's labels,
metrics per category; bad requests get a 4xx naming the field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest

from studio.core.eval_metrics import METRICS, Scored, aggregate, row_scores, summarize
from tests.conftest import make_settings, server_starter, wait_until, worker_starter
from tests.rest_support import QUICK, train_over_rest, wait_finished


# --- metrics against hand-computed values --------------------------------------------------


def test_exact_match_rouge_bleu_chrf_by_hand():
    same = row_scores(Scored(" the cat sat \n", "the cat sat"))
    assert same["exact_match"] == 1.0  # whitespace around the answer is ignored, as in training
    assert same["bleu"] == pytest.approx(100.0) and same["chrf"] == pytest.approx(100.0)
    assert same["length"] == 3.0

    short = row_scores(Scored("the cat sat", "the cat sat on the mat"))
    # ROUGE-1: 3 shared words; precision 3/3, recall 3/6 -> F = 2PR/(P+R) = 2/3
    assert short["rouge1"] == pytest.approx(2 / 3)
    # ROUGE-2: bigrams "the cat", "cat sat" shared; P 2/2, R 2/5 -> F = 4/7
    assert short["rouge2"] == pytest.approx(4 / 7)
    # ROUGE-L: longest common subsequence of 3 words -> the same 2/3
    assert short["rougeL"] == pytest.approx(2 / 3)
    assert short["exact_match"] == 0.0

    # BLEU by hand: n-gram precisions 5/6, 3/5, 2/4, 1/3, same length (no brevity penalty):
    # (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** (1/4)
    bleu = row_scores(Scored("the cat sat on the mat", "the cat sat on a mat"))["bleu"]
    assert bleu == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)
    assert aggregate([Scored("the cat sat on the mat", "the cat sat on a mat")],
                     [row_scores(Scored("the cat sat on the mat", "the cat sat on a mat"))])["bleu"] == pytest.approx(bleu)


def test_perplexity_is_token_weighted_and_categories_break_it_down():
    items = [
        Scored("4", "4", "math", nll=2 * math.log(2), tokens=2),  # per-token likelihood 1/2: perplexity 2
        Scored("x", "7", "math", nll=4 * math.log(4), tokens=4),  # 1/4 per token: perplexity 4
        Scored("dog", "dog", "words", nll=math.log(8), tokens=1),  # perplexity 8
    ]
    per_row, overall, categories = summarize(items)
    assert [r["perplexity"] for r in per_row] == pytest.approx([2, 4, 8])
    # exp(total nll / total tokens) = (2^2 * 4^4 * 8) ** (1/7)
    assert overall["perplexity"] == pytest.approx((4 * 256 * 8) ** (1 / 7))
    assert overall["exact_match"] == pytest.approx(2 / 3)
    assert categories["math"]["perplexity"] == pytest.approx((4 * 256) ** (1 / 6))
    assert categories["math"]["exact_match"] == 0.5 and categories["words"]["exact_match"] == 1.0
    assert categories["math"]["rows"] == 2 and overall["rows"] == 3


def test_typed_prompts_skip_what_needs_a_reference():
    per_row, overall, categories = summarize([Scored("one two", None), Scored("three", None)])
    assert overall["length"] == 1.5 and categories == {}
    assert all(overall[m] is None for m in METRICS if m != "length")
    assert all(per_row[0][m] is None for m in METRICS if m != "length")


# --- the evaluation set ----------------------------------------------------------------------


def test_validation_rows_are_those_a_job_holds_out():
    from studio.core.config import DataSection
    from studio.core.demo import demo_dataset
    from studio.services.evals import held_out
    from worker.recipe import split_rows

    rows = demo_dataset(50, seed=1)
    for seed in (1, 42):
        assert held_out(rows, 0.2, seed) == split_rows(rows, DataSection(validation_fraction=0.2), seed)[1]
    marked = [dict(r, split="validation" if i % 5 == 0 else "train") for i, r in enumerate(rows)]
    assert held_out(marked, 0.5, 3) == [r for r in marked if r["split"] == "validation"]


def test_dataset_rows_become_prompt_reference_and_context():
    from studio.services.evals import eval_row_of

    alpaca = eval_row_of(0, {"instruction": " Add 3 and 4. ", "input": "", "output": "7", "category": "math"})
    assert (alpaca.prompt, alpaca.reference, alpaca.category, alpaca.context) == (" Add 3 and 4. ", "7", "math", [])
    chat = eval_row_of(1, {"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Add 3 and 4."},
        {"role": "assistant", "content": "7"},
    ]})
    assert chat.prompt == "Add 3 and 4." and chat.reference == "7" and chat.category is None
    assert [m["role"] for m in chat.context] == ["system", "user", "assistant"]


@pytest.mark.db
def test_a_queued_run_cancels_at_once_and_is_never_claimed(ctx):
    from studio.leases import EVALS
    from studio.services import evals

    run = evals.create_eval(ctx, evals.EvalRequest(models=["demo"], prompts=["Say hi.", "Add 2 and 2."]))
    assert run.status == "queued" and run.row_count == 2 and run.split == "all"
    rows = evals.eval_rows(ctx, run.id, 0, 10)
    assert [r.prompt for r in rows] == ["Say hi.", "Add 2 and 2."] and rows[0].reference is None
    assert evals.cancel_eval(ctx, run.id).status == "cancelled"
    assert EVALS.claim(ctx.engine, run.id, "w@test", 60) is None
    with pytest.raises(evals.EvalRefused):
        evals.cancel_eval(ctx, run.id)


@pytest.mark.db
def test_a_run_on_a_dataset_records_which_version_it_read(ctx, alpaca_file):
    from studio.services import datasets, evals

    dataset = datasets.create_dataset(ctx, alpaca_file.name, alpaca_file.read_bytes())[0]
    run = evals.create_eval(ctx, evals.EvalRequest(models=["demo"], dataset_id=dataset.id, split="all", max_rows=3))
    assert (run.dataset_id, run.dataset_version_id, run.row_count) == (dataset.id, dataset.version_id, 3)


@pytest.mark.db
def test_a_job_that_asked_for_it_is_evaluated_once_when_it_succeeds(ctx, alpaca_file):
    """training.evaluate_when_done: the reaper's pass starts one evaluation of the final
    result against the base, on the job's held-out rows; a second pass (or a second studio)
    starts none; a job whose final result has not arrived yet waits; one that cannot be
    evaluated says why in its log, once."""
    from studio.core.paths import JobPaths
    from studio.db import session_scope
    from studio.models import Checkpoint, Job, JobStatus, utcnow
    from studio.services import datasets, evals, jobs

    dataset = datasets.create_dataset(ctx, alpaca_file.name, alpaca_file.read_bytes())[0]
    asked = {"training": {"evaluate_when_done": True, "max_new_tokens": 9}}
    wanted = jobs.create_job(ctx, dataset.id, "demo", asked)
    plain = jobs.create_job(ctx, dataset.id, "demo")
    nothing_held_out = jobs.create_job(ctx, dataset.id, "demo", {**asked, "data": {"validation_fraction": 0}})
    waiting = jobs.create_job(ctx, dataset.id, "demo", asked)

    def succeed(job_id: int, final: bool = True) -> None:
        with session_scope(ctx.engine) as session:
            job = session.get(Job, job_id)
            job.status, job.finished_at = JobStatus.succeeded, utcnow()
            if final:
                folder = JobPaths(ctx.settings.artifacts_root, job_id).final
                folder.mkdir(parents=True)
                session.add(Checkpoint(job_id=job_id, step=12, path=f"jobs/{job_id}/final", final=True))

    for job in (wanted, plain, nothing_held_out):
        succeed(job.id)
    succeed(waiting.id, final=False)
    (run_id,) = evals.auto_evaluate(ctx)
    run = evals.get_eval(ctx, run_id)
    assert run.models == ["demo", f"job-{wanted.id}"] and run.split == "validation" and run.status == "queued"
    assert run.dataset_id == dataset.id and run.sampling["max_tokens"] == 9
    assert run.created_by == f"automatic, when job {wanted.id} succeeded"
    assert jobs.job_logs(ctx, wanted.id)[-1].endswith(f"evaluation run {run_id} (Evaluate tab)")
    assert "did not start" in jobs.job_logs(ctx, nothing_held_out.id)[-1]
    assert jobs.job_logs(ctx, plain.id) == [] and jobs.job_logs(ctx, waiting.id) == []
    assert evals.auto_evaluate(ctx) == [] and len(evals.list_evals(ctx)) == 1
    assert len(jobs.job_logs(ctx, nothing_held_out.id)) == 1


# --- a real worker, a real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def studio(tmp_path_factory, module_processes, tiny_model_dir, alpaca_file):
    settings = make_settings(tmp_path_factory.mktemp("evals") / "data")
    worker_starter(module_processes)(settings)
    url = server_starter(module_processes)(settings)
    with httpx.Client(base_url=url, timeout=60) as client:
        dataset_id, job_id = train_over_rest(client, alpaca_file, str(tiny_model_dir), module_processes)
        yield client, settings, dataset_id, job_id, module_processes


def _teacher_forced_perplexity(settings, job_id: int, base_dir: Path, row: dict) -> float:
    """exp(mean loss on the reply tokens) by plain transformers + peft and the training's
    own labels (encode_example), independent of the worker's batching and padding."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.core.config import TemplateSection
    from studio.core.templates import encode_example

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir), settings.artifacts_root / "jobs" / str(job_id) / "final"
    ).eval()
    encoded = encode_example(tokenizer, row, 1024, TemplateSection(**QUICK["template"]))
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([encoded.input_ids]), labels=torch.tensor([encoded.labels])).loss
    return math.exp(float(loss))


@pytest.mark.slow
def test_base_checkpoint_and_result_are_evaluated_by_a_worker(studio, tiny_model_dir):
    client, settings, dataset_id, job_id, processes = studio
    models = [str(tiny_model_dir), f"job-{job_id}/checkpoint-6", f"job-{job_id}"]
    created = client.post("/api/evals", json={
        "models": models, "dataset_id": dataset_id, "split": "validation", "max_rows": 6,
        "sampling": {"max_tokens": 12},
    })
    assert created.status_code == 201, created.text
    eval_id = created.json()["id"]
    state = wait_finished(client, f"/api/evals/{eval_id}", processes, 300)
    assert state["status"] == "succeeded", state["error"]
    assert state["progress"] == 1.0 and state["row_count"] == 6
    results = {r["model"]: r for r in state["results"]}
    assert list(results) == models
    for result in results.values():
        assert set(METRICS) <= set(result["metrics"])
        assert result["metrics"]["perplexity"] > 1 and 0 <= result["metrics"]["rouge1"] <= 1
        assert result["categories"] and all(c["rows"] >= 1 for c in result["categories"].values())
        assert sum(c["rows"] for c in result["categories"].values()) == 6

    page = client.get(f"/api/evals/{eval_id}/rows", params={"offset": 0, "limit": 4}).json()
    rest = client.get(f"/api/evals/{eval_id}/rows", params={"offset": 4, "limit": 4}).json()
    assert [r["index"] for r in page + rest] == list(range(6))
    for row in page + rest:
        assert set(row["outputs"]) == set(models) and set(row["scores"]) == set(models)
        assert row["reference"] is not None and row["category"]

    # The rows are the job's own held-out rows, exactly as the dataset gives them.
    source = client.get(f"/api/datasets/{dataset_id}/rows", params={"limit": 500}).json()
    first = page[0]
    original = next(r for r in source if r["instruction"] == first["prompt"] and r["input"] == first["input"])
    assert first["reference"] == original["output"] and first["category"] == original["category"]
    expected = _teacher_forced_perplexity(settings, job_id, tiny_model_dir, original)
    assert first["scores"][f"job-{job_id}"]["perplexity"] == pytest.approx(expected, rel=1e-3)

    listed = client.get("/api/evals").json()
    assert listed[0]["id"] == eval_id
    assert client.post(f"/api/evals/{eval_id}/cancel").status_code == 409


@pytest.mark.slow
def test_a_job_with_evaluate_when_done_gets_its_evaluation_from_the_studio_and_a_worker(studio, tiny_model_dir):
    client, _settings, dataset_id, _job_id, processes = studio
    config = {**QUICK, "training": {**QUICK["training"], "evaluate_when_done": True, "max_new_tokens": 6}}
    job = client.post("/api/jobs", json={"dataset_id": dataset_id, "base_model": str(tiny_model_dir), "config": config})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    assert wait_finished(client, f"/api/jobs/{job_id}", processes, 300)["status"] == "succeeded"

    def started():  # by the studio's reaper pass, a quarter of a lease after the job ended
        return next((r for r in client.get("/api/evals").json() if r["created_by"].endswith(f"job {job_id} succeeded")), None)

    run = wait_until(started, 60, interval=0.5, what="the automatic evaluation to start")
    state = wait_finished(client, f"/api/evals/{run['id']}", processes, 300)
    assert state["status"] == "succeeded", state["error"]
    assert [r["model"] for r in state["results"]] == [str(tiny_model_dir), f"job-{job_id}"]
    assert all(r["metrics"]["perplexity"] > 1 for r in state["results"])
    assert any(f"evaluation run {run['id']}" in line for line in client.get(f"/api/jobs/{job_id}/logs").json())


@pytest.mark.slow
def test_typed_prompts_get_answers_and_lengths_only(studio):
    client, _settings, _dataset_id, job_id, processes = studio
    created = client.post("/api/evals", json={"models": [f"job-{job_id}"], "prompts": ["Add 3 and 4.", "Say hi."]})
    assert created.status_code == 201, created.text
    state = wait_finished(client, f"/api/evals/{created.json()['id']}", processes, 300)
    assert state["status"] == "succeeded", state["error"]
    metrics = state["results"][0]["metrics"]
    assert metrics["length"] is not None and metrics["perplexity"] is None and metrics["exact_match"] is None
    rows = client.get(f"/api/evals/{created.json()['id']}/rows").json()
    assert [r["prompt"] for r in rows] == ["Add 3 and 4.", "Say hi."]
    assert all(isinstance(r["outputs"][f"job-{job_id}"], str) for r in rows)


@pytest.mark.slow
def test_a_running_run_stops_at_its_next_chunk_when_cancelled(studio):
    client, _settings, dataset_id, job_id, processes = studio
    created = client.post("/api/evals", json={
        "models": [f"job-{job_id}", f"job-{job_id}/checkpoint-6"], "dataset_id": dataset_id, "split": "all",
        "max_rows": 120, "sampling": {"max_tokens": 48},
    })
    eval_id = created.json()["id"]
    wait_until(lambda: client.get(f"/api/evals/{eval_id}").json()["status"] == "running", 120, 0.2, "the run to start")
    assert client.post(f"/api/evals/{eval_id}/cancel").json()["cancel_requested"] is True
    state = wait_finished(client, f"/api/evals/{eval_id}", processes, 180)
    assert state["status"] == "cancelled" and state["results"] == []
    answered = [r for r in client.get(f"/api/evals/{eval_id}/rows", params={"limit": 200}).json() if r["outputs"]]
    assert len(answered) < 120  # it stopped before the end


@pytest.mark.slow
def test_bad_requests_are_4xx_naming_the_field(studio, tmp_path):
    client, _settings, dataset_id, job_id, _processes = studio
    one_row = tmp_path / "one.jsonl"
    one_row.write_text(json.dumps({"instruction": "Say hi.", "input": "", "output": "hi"}) + "\n")
    tiny = client.post("/api/datasets", files={"file": (one_row.name, one_row.read_bytes())}).json()["id"]
    ok = {"models": [f"job-{job_id}"], "dataset_id": dataset_id}
    cases = [
        ({**ok, "models": ["job-999"]}, 422, "models[0]"),
        ({**ok, "models": [f"job-{job_id}/checkpoint-5"]}, 422, "models[0]"),
        ({**ok, "models": []}, 422, "models"),
        ({**ok, "models": ["demo"] * 9}, 422, "models"),
        ({**ok, "split": "test"}, 422, "split"),
        ({**ok, "max_rows": 0}, 422, "max_rows"),
        ({**ok, "max_rows": 10**9}, 422, "max_rows"),
        ({**ok, "dataset_id": tiny, "split": "validation"}, 422, "split"),  # one row: none held out
        ({**ok, "dataset_id": 99999}, 404, "dataset 99999"),
        ({"models": ["demo"]}, 422, "dataset_id"),
        ({**ok, "prompts": ["hi"]}, 422, "prompts"),
        ({"models": ["demo"], "prompts": []}, 422, "prompts"),
        ({"models": ["demo"], "prompts": ["  "]}, 422, "prompts"),
        ({**ok, "sampling": {"temperature": 9}}, 422, "sampling.temperature"),
        ({**ok, "colour": "red"}, 422, "colour"),
    ]
    for body, status, field in cases:
        response = client.post("/api/evals", json=body)
        assert response.status_code == status, (body, response.text)
        assert field in response.json()["detail"], (body, response.text)
    assert client.get("/api/evals/99999").status_code == 404
    assert client.get("/api/evals/99999/rows").status_code == 404
    assert client.get("/api/evals/abc").status_code == 422
    assert client.get("/api/evals/1/rows", params={"limit": 10**6}).status_code == 422


@pytest.mark.db
def test_the_reaper_requeues_an_expired_run_and_fails_one_out_of_attempts(ctx):
    from studio.leases import EVALS
    from studio.services import evals

    run = evals.create_eval(ctx, evals.EvalRequest(models=["demo"], prompts=["Say hi."]))
    for attempt in range(1, 4):
        claimed = EVALS.claim(ctx.engine, run.id, f"w{attempt}@test", lease_seconds=-1)  # its lease is over at once
        assert claimed is not None and claimed.attempts == attempt
        evals.reap(ctx)
        state = evals.get_eval(ctx, run.id)
        if attempt < 3:
            assert state.status == "queued" and "requeued" in state.stage
    assert state.status == "failed" and "died 3 times" in state.error
    assert EVALS.claim(ctx.engine, run.id, "w4@test", 60) is None


@pytest.mark.slow
def test_a_resumed_run_keeps_the_answers_it_stored(settings, tiny_model_dir):
    """answer_all skips what a previous attempt stored, and stores each chunk as it goes;
    batched and one-at-a-time greedy answers are the same (the real engine, a tiny model)."""
    from worker.evaluate import Item, answer_all, make_engine
    from worker.infer.engine import ModelSpec

    spec = ModelSpec(id="tiny", base=str(tiny_model_dir))
    prompts = ["Which word comes last in the input?", "Add 3 and 4.", "Say hi.", "Count the words."]
    rows = [Item(i, p, "", [], None, None) for i, p in enumerate(prompts)]
    rows[1].outputs["tiny"] = "kept from the first attempt"
    stored: list[list[int]] = []
    engine = make_engine(settings)
    try:
        answer_all(engine, [spec], rows, {"max_tokens": 8}, store=lambda chunk: stored.append([i.index for i in chunk]),
                   chunk_rows=2)
    finally:
        engine.stop()
    assert stored == [[0, 2], [3]]
    assert rows[1].outputs["tiny"] == "kept from the first attempt"
    single = [Item(i, p, "", [], None, None) for i, p in enumerate(prompts)]
    engine = make_engine(settings, batch_rows=1)
    try:
        answer_all(engine, [spec], single, {"max_tokens": 8})
    finally:
        engine.stop()
    assert [r.outputs["tiny"] for r in single if r.index != 1] == [r.outputs["tiny"] for r in rows if r.index != 1]
