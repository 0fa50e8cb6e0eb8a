"""The raters' queue under load: 20 raters polling `GET /api/campaigns/{id}/next` at once
against a real `studio serve` (SQLite), each rating what it gets, until the campaign is
done. Goal (issue 12): next p95 <= 100 ms.

Two passes: a burst (no pause between a rater's calls: all 20 always in flight, the worst
case) and raters who read for a while (uniform 0 to 2x --think seconds) before voting.

The campaign's answers are written straight into a succeeded evaluation run (synthetic
texts for 4 contestants), so the figure is the queue's, not generation's.

    python bench/rating_queue.py [--raters 20] [--prompts 300] [--ratings-per-item 3] [--think 1.5]
        [--postgres postgresql://postgres@127.0.0.1:5432]

--postgres runs the studio on a new database of that server (created, then dropped), as
docker-compose deploys it, instead of SQLite.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.demo_job import free_port, wait_for  # noqa: E402


def _campaign(ctx, prompts: int, ratings_per_item: int) -> int:
    """A campaign whose evaluation run has already succeeded, with its items made."""
    from studio.db import session_scope
    from studio.models import Campaign, EvalRow, EvalRun, JobStatus
    from studio.services import campaigns

    models = [f"model-{k}" for k in range(4)]
    with session_scope(ctx.engine) as session:
        run = EvalRun(models=models, specs=[], split="all", row_count=prompts, status=JobStatus.succeeded,
                      progress=1.0)
        session.add(run)
        session.flush()
        for i in range(prompts):
            session.add(EvalRow(eval_id=run.id, index=i, prompt=f"Question {i}: what comes after {i}?",
                                outputs={m: f"{m} says {i + 1}" for m in models}))
        campaign = Campaign(name="bench", models=models, mode="both", criteria=["helpfulness", "accuracy"],
                            ratings_per_item=ratings_per_item, eval_id=run.id, seed=1, salt="bench")
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
    assert campaigns.refresh(ctx, campaign_id) == "open"
    return campaign_id


def bench_next(raters: int = 20, prompts: int = 300, ratings_per_item: int = 3, think: float = 0.0,
               database_url: str | None = None) -> dict:
    from studio.migrate import upgrade
    from studio.services import accounts
    from studio.services.context import StudioContext
    from studio.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    settings = Settings(data_dir=data_dir, database_url=database_url)
    upgrade(settings.db_url)
    ctx = StudioContext.from_settings(settings)
    tokens = []
    for k in range(raters):
        accounts.add_user(ctx.engine, f"rater{k}", "rater", "correct horse battery")
        tokens.append(accounts.create_token(ctx.engine, f"rater{k}"))
    campaign_id = _campaign(ctx, prompts, ratings_per_item)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(settings.as_env(), PYTHONUNBUFFERED="1")
    log = open(data_dir / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "studio", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    next_ms: list[float] = []
    rate_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(raters)

    def rater(token: str) -> None:
        pause = random.Random(token)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            client.get("/api/rating/campaigns")  # a first call, as a page load would
            start.wait()
            while True:
                began = time.perf_counter()
                got = client.get(f"/api/campaigns/{campaign_id}/next")
                took = (time.perf_counter() - began) * 1000
                if got.status_code == 204:
                    return
                if got.status_code != 200:
                    with lock:
                        errors.append(f"next {got.status_code}: {got.text[:200]}")
                    return
                item = got.json()
                if think:
                    time.sleep(pause.uniform(0, 2 * think))
                body = {"item_id": item["item_id"], "winner": "A",
                        "scores": {s: {"helpfulness": 4, "accuracy": 3} for s in ("A", "B")}}
                began = time.perf_counter()
                stored = client.post(f"/api/campaigns/{campaign_id}/ratings", json=body)
                with lock:
                    next_ms.append(took)
                    rate_ms.append((time.perf_counter() - began) * 1000)
                    if stored.status_code != 201:
                        errors.append(f"rating {stored.status_code}: {stored.text[:200]}")

    try:
        wait_for(lambda: httpx.get(url + "/api/health", timeout=1).status_code == 200, 90, "studio serve")
        threads = [threading.Thread(target=rater, args=(t,)) for t in tokens]
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - began
    finally:
        server.kill()
        server.wait(10)

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values or [0.0])[0]

    return {"think": think, "raters": raters, "items": prompts, "ratings": len(rate_ms), "wall_s": wall, "errors": errors,
            "next_p50": pct(next_ms, 50), "next_p95": pct(next_ms, 95), "next_max": max(next_ms, default=0.0),
            "rate_p50": pct(rate_ms, 50), "rate_p95": pct(rate_ms, 95)}


def report(r: dict) -> str:
    mode = f"reading ~{r['think']:.1f} s per item" if r["think"] else "burst, no pause"
    return (f"rater queue ({mode}): {r['raters']} raters at once on {r['items']} items, {r['ratings']} ratings in "
            f"{r['wall_s']:.1f} s: GET next p50 {r['next_p50']:.0f} ms, p95 {r['next_p95']:.0f} ms "
            f"(goal <= 100 ms), max {r['next_max']:.0f} ms; POST rating p50 {r['rate_p50']:.0f} ms, "
            f"p95 {r['rate_p95']:.0f} ms; errors {len(r['errors'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--ratings-per-item", type=int, default=3)
    parser.add_argument("--think", type=float, default=None, help="one pass with this mean reading time")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server to run on (a new database, dropped after)")
    args = parser.parse_args()
    for think in ([args.think] if args.think is not None else [0.0, 1.5]):
        prompts = args.prompts if think == 0 else min(args.prompts, 100)
        with _database(args.postgres) as url:
            r = bench_next(args.raters, prompts, args.ratings_per_item, think, url)
        print(("PostgreSQL " if url else "SQLite ") + report(r))
        for e in r["errors"][:5]:
            print("  ", e)


@contextlib.contextmanager
def _database(server: str | None):
    """None (SQLite), or the URL of a new database on server, dropped afterwards."""
    if not server:
        yield None
        return
    import psycopg

    name = f"bench_queue_{os.getpid()}_{random.randrange(10**6)}"
    with psycopg.connect(server.rstrip("/") + "/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server.rstrip('/')}/{name}"
    finally:
        with psycopg.connect(server.rstrip("/") + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
