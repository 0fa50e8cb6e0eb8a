"""Evaluation benchmarks, one function per part.

- leaderboard: Bradley-Terry fit plus 1000 bootstrap rounds for 20 models and 20,000
  simulated votes (goal <= 3 s), best of --repeat runs and the median.

    python bench/evaluation.py [--part leaderboard] [--repeat 5]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["leaderboard", "all"], default="all")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.part in ("leaderboard", "all"):
        r = bench_leaderboard(repeat=args.repeat)
        print(f"leaderboard: {r['models']} models x {r['votes']:,} votes x {r['rounds']} bootstrap rounds: "
              f"best {r['best_s']:.2f} s, median {r['median_s']:.2f} s (goal <= 3 s); "
              f"largest rating error vs the true strengths {r['max_rating_error']:.1f} points")


if __name__ == "__main__":
    main()
