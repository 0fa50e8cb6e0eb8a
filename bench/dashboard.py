"""What watching a job costs: training speed with the Jobs tab open in a real Chromium
against the same job with no browser, and the browser's CPU share while it watches.

Goal (issue 10): steps/s watched >= 0.95 x unwatched, the browser <= 5% of one core.

Each trial starts `studio up` on a fresh data dir, uploads the demo data and trains the
demo job for --steps steps, alternately watched and unwatched (--trials of each). Speed is
the median step time from the job's own metric points, evaluation pauses left out
(studio.core.timing.pace), so an eval does not count against either side. Browser CPU is
the CPU time of Chromium's processes over the trained window, per wall second.

    python bench/dashboard.py [--steps 400] [--trials 2] [--root DIR]

--root runs another checkout's studio (e.g. a `git worktree` of an older commit, for a
before/after figure); this script and its Chromium stay the same. Needs playwright and
/usr/bin/chromium (as the browser tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"

from bench.demo_job import free_port, wait_for  # noqa: E402  (one copy of the bench helpers)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def trial(studio_root: Path, steps: int, watched: bool) -> dict:
    """One demo job of `steps` steps; returns its step time and, when watched, the browser's CPU."""
    from studio.core.demo import DEMO_ROWS, demo_dataset
    from studio.core.timing import TrainPoint, pace

    data_dir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_") and k != "REDIS_URL"}
    env["PYTHONPATH"] = str(studio_root)
    up = subprocess.Popen(
        [sys.executable, "-m", "studio", "up", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=studio_root, env=env, stdout=subprocess.DEVNULL, stderr=open(data_dir / "up.log", "wb"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    playwright = browser = None
    try:
        client = httpx.Client(base_url=url, timeout=60)
        wait_for(lambda: client.get("/api/health").status_code == 200, 180, "studio up")
        body = "".join(json.dumps(r) + "\n" for r in demo_dataset(DEMO_ROWS)).encode()
        dataset = client.post("/api/datasets", files={"file": ("demo.jsonl", body)}).json()
        config = {"training": {"max_steps": steps}}
        if watched:
            from playwright.sync_api import sync_playwright

            playwright = sync_playwright().start()
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_role("tab", name="Jobs").click()
        job = client.post("/api/jobs", json={"dataset_id": dataset["id"], "base_model": "demo", "config": config}).json()
        wait_for(lambda: client.get(f"/api/jobs/{job['id']}").json()["step"] > 5, 300, "training to start")
        # Chromium runs under playwright's driver, a child of this process
        procs = [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()] if watched else []
        cpu_before, wall_before = cpu_seconds(procs), time.monotonic()
        final = wait_for(
            lambda: (j := client.get(f"/api/jobs/{job['id']}").json())["status"] in ("succeeded", "failed", "cancelled")
            and j, 1800, "the job to end",
        )
        cpu, wall = cpu_seconds(procs) - cpu_before, time.monotonic() - wall_before
        with sqlite3.connect(data_dir / "studio.db") as db:  # the route gives no times; the DB has them
            points = db.execute(
                "SELECT step, split, recorded_at FROM metric_point WHERE job_id = ? ORDER BY step", (job["id"],)
            ).fetchall()
        if watched:
            plotted = page.evaluate(
                "() => { const p = document.querySelector('#loss-plot .js-plotly-plot');"
                " return p ? p.data[0].x.length : null; }"
            )
    finally:
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
    if final["status"] != "succeeded":
        raise RuntimeError(f"job {final['status']}: {final['error']}")
    train = [TrainPoint(step, at) for step, split, at in points if split == "train"]
    step_seconds = pace(train, [step for step, split, _ in points if split == "eval"]).step_seconds
    return {
        "watched": watched, "steps_per_second": 1 / step_seconds, "wall": wall,
        "browser_core_share": cpu / wall if watched else None, "plotted": plotted if watched else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--trials", type=int, default=2, help="trials of each kind, alternated")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose studio runs")
    args = parser.parse_args()
    results = []
    for i in range(args.trials):
        for watched in (False, True):
            result = trial(args.root.resolve(), args.steps, watched)
            results.append(result)
            share = result["browser_core_share"]
            print(
                f"trial {i + 1} {'watched  ' if watched else 'unwatched'}: {result['steps_per_second']:.2f} steps/s"
                + (f", browser {100 * share:.1f}% of a core, plot had {result['plotted']} train points" if watched else ""),
                flush=True,
            )
    alone = statistics.median(r["steps_per_second"] for r in results if not r["watched"])
    seen = statistics.median(r["steps_per_second"] for r in results if r["watched"])
    share = statistics.median(r["browser_core_share"] for r in results if r["watched"])
    print(f"studio at {args.root}: {args.steps} steps per trial, {args.trials} trials each, load {os.getloadavg()[0]:.1f}")
    print(f"steps/s unwatched {alone:.2f}, watched {seen:.2f}: ratio {seen / alone:.3f} (goal >= 0.95)")
    print(f"browser CPU while watching: {100 * share:.1f}% of one core (goal <= 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
