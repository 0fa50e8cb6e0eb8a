"""Evaluation benchmarks, one function per part.

- run: an evaluation run (worker/evaluate.py, in this process) of the demo base and 3
  checkpoints of a short demo job on 256 held-out demo rows: wall time by stage; then
  the same answers generated in batches (the engine's default) and one row at a time
  (goal >= 3x), with the greedy answers of both compared.
- leaderboard: Bradley-Terry fit plus 1000 bootstrap rounds for 20 models and 20,000
  simulated votes (goal <= 3 s), best of --repeat runs and the median.
- queue: GET /api/campaigns/{id}/next with 20 raters at once on a real `studio serve`
  (goal p95 <= 100 ms): a burst, and raters who read ~1.5 s per item (bench/rating_queue.py).

    python bench/evaluation.py [--part run|leaderboard|queue] [--repeat 5] [--rows 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)


def bench_leaderboard(models: int = 20, votes: int = 20_000, rounds: int = 1000, repeat: int = 5) -> dict:
    """Time the whole leaderboard (fit, bootstrap, ranks, counts, agreement) on votes
    drawn from known strengths; also reports how well the fit recovered them."""
    import numpy as np

    from studio.core.leaderboard import Vote, build_leaderboard

    rng = np.random.default_rng(0)
    true = rng.normal(1000, 150, models)
    names = [f"model-{i}" for i in range(models)]
    a = rng.integers(0, models, votes)
    b = (a + rng.integers(1, models, votes)) % models
    p_a = 1 / (1 + 10 ** ((true[b] - true[a]) / 400))
    winners = np.where(rng.random(votes) < p_a, "A", "B")
    ballots = [Vote(k // 3, k % 40, names[i], names[j], w) for k, (i, j, w) in enumerate(zip(a, b, winners))]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        board = build_leaderboard(ballots, models=names, rounds=rounds)
        times.append(time.perf_counter() - started)
    fitted = {r.model: r.rating for r in board.models}
    error = max(abs(fitted[n] - (t - true.mean() + 1000)) for n, t in zip(names, true))
    return {"models": models, "votes": votes, "rounds": rounds, "best_s": min(times),
            "median_s": statistics.median(times), "max_rating_error": error}


def bench_run(rows: int = 256, steps: int = 30, max_tokens: int = 32, workdir: Path | None = None) -> dict:
    """Train a demo job with 3 checkpoints here, then evaluate base + checkpoints on its
    held-out rows, timing the whole run and batched against one-at-a-time generation."""
    import json
    import tempfile

    from studio.core.demo import demo_dataset
    from studio.migrate import upgrade
    from studio.services import datasets, evals, jobs
    from studio.services.context import StudioContext
    from studio.settings import Settings
    from worker import evaluate, tasks

    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-eval-"))
    settings = Settings(data_dir=workdir / "data")
    upgrade(settings.db_url)
    ctx = StudioContext.from_settings(settings)
    tasks.get_settings = lambda: settings
    fraction = 0.2
    data = workdir / "demo.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in demo_dataset(int(rows / fraction) + 1, seed=11)))
    dataset_id = datasets.create_dataset(ctx, data.name, data.read_bytes())[0].id
    every = max(1, steps // 3)
    config = {"training": {"max_steps": every * 3, "batch_size": 8, "save_every": every, "keep_last": 3,
                           "sample_every": every * 3, "max_length": 128, "max_new_tokens": 8},
              "data": {"validation_fraction": fraction, "probe_count": 1, "exact_match_rows": 2}}
    started = time.perf_counter()
    job = jobs.create_job(ctx, dataset_id, "demo", config, preset="")
    tasks.run_job(job.id)
    assert jobs.get_job(ctx, job.id).status.value == "succeeded", jobs.get_job(ctx, job.id).error
    train_s = time.perf_counter() - started
    models = ["demo"] + [f"job-{job.id}/checkpoint-{every * k}" for k in (1, 2, 3)]
    request = evals.EvalRequest(models=models, dataset_id=dataset_id, split="validation", max_rows=rows,
                                sampling=evals.EvalSampling(max_tokens=max_tokens))
    run = evals.create_eval(ctx, request)
    started = time.perf_counter()
    outcome = evaluate.run(settings, run.id)
    run_s = time.perf_counter() - started
    finished = evals.get_eval(ctx, run.id)
    assert outcome == "succeeded", finished.error

    # Generation alone, batched vs one row at a time, on the same rows and models.
    from worker.infer.engine import ModelSpec

    specs = [ModelSpec.model_validate(s) for s in evals_specs(ctx, run.id)]
    timings, answers = {}, {}
    for name, batch_rows in (("batched", evaluate.BATCH_ROWS), ("one_at_a_time", 1)):
        items = [evaluate.Item(i.index, i.prompt, i.input, i.context, i.reference, i.category)
                 for i in evaluate.load_rows(ctx.engine, run.id)]
        engine = evaluate.make_engine(settings, batch_rows=batch_rows)
        try:
            evaluate.answer_all(engine, specs, items[:1], {"max_tokens": max_tokens})  # load the models first
            for item in items:
                item.outputs.clear()
            started = time.perf_counter()
            evaluate.answer_all(engine, specs, items, {"max_tokens": max_tokens})
            timings[name] = time.perf_counter() - started
        finally:
            engine.stop()
        answers[name] = [i.outputs for i in items]
    same = sum(a == b for a, b in zip(answers["batched"], answers["one_at_a_time"])) / max(1, len(answers["batched"]))
    return {"rows": finished.row_count, "models": len(models), "train_s": train_s, "run_s": run_s,
            "batched_s": timings["batched"], "single_s": timings["one_at_a_time"],
            "speedup": timings["one_at_a_time"] / timings["batched"], "same_answers": same,
            "results": {r.model: r.metrics for r in finished.results}}


def evals_specs(ctx, eval_id: int) -> list[dict]:
    from studio.db import session_scope
    from studio.models import EvalRun

    with session_scope(ctx.engine) as session:
        return list(session.get(EvalRun, eval_id).specs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["run", "leaderboard", "queue", "all"], default="all")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=256, help="held-out rows the evaluation run scores")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.part in ("run", "all"):
        r = bench_run(rows=args.rows, max_tokens=args.max_tokens)
        print(f"evaluation run: {r['rows']} held-out demo rows x {r['models']} models (base + 3 checkpoints), "
              f"max {args.max_tokens} new tokens: {r['run_s']:.1f} s wall (the demo job it evaluates trained in "
              f"{r['train_s']:.1f} s)")
        print(f"generation: batched {r['batched_s']:.1f} s, one row at a time {r['single_s']:.1f} s: "
              f"{r['speedup']:.1f}x (goal >= 3x); identical greedy answers on {r['same_answers']:.0%} of rows")
        for model, metrics in r["results"].items():
            print(f"  {model}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if v is not None))
    if args.part in ("leaderboard", "all"):
        r = bench_leaderboard(repeat=args.repeat)
        print(f"leaderboard: {r['models']} models x {r['votes']:,} votes x {r['rounds']} bootstrap rounds: "
              f"best {r['best_s']:.2f} s, median {r['median_s']:.2f} s (goal <= 3 s); "
              f"largest rating error vs the true strengths {r['max_rating_error']:.1f} points")
    if args.part in ("queue", "all"):
        bench_queue()


def bench_queue() -> None:
    """The raters' queue: a burst of 20, then 20 who read before voting."""
    from bench.rating_queue import bench_next, report

    for think, prompts in ((0.0, 300), (1.5, 100)):
        print(report(bench_next(raters=20, prompts=prompts, think=think)))


if __name__ == "__main__":
    main()
