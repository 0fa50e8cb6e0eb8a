"""20 dashboard clients poll a training job at once, on the real `studio serve` and a real
worker: every answer is a 2xx, and training goes on. Prints the polling latency and the
training rate with and without the clients (figures, not limits: this machine is shared)."""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest

from studio.services import jobs
from studio.services.context import StudioContext
from tests.conftest import make_settings, upload_file, wait_until

pytestmark = pytest.mark.slow
CLIENTS = 20
WINDOW_SECONDS = 12.0
LONG = {
    "training": {"max_steps": 100_000, "batch_size": 4, "sample_every": 100_000, "max_length": 64, "max_new_tokens": 4},
    "data": {"probe_count": 1, "exact_match_rows": 2},
}


def _train_steps(ctx, job_id: int) -> int:
    return sum(1 for m in jobs.job_metrics(ctx, job_id) if m.split == "train")


def _rate(ctx, job_id: int, seconds: float) -> float:
    first, started = _train_steps(ctx, job_id), time.monotonic()
    time.sleep(seconds)
    return (_train_steps(ctx, job_id) - first) / (time.monotonic() - started)


def test_twenty_dashboards_while_a_job_trains(tmp_path, tiny_model_dir, alpaca_file, start_worker, start_server):
    ctx = StudioContext.from_settings(make_settings(tmp_path / "data", model_dirs=[tiny_model_dir.parent]))
    start_worker(ctx.settings)
    url = start_server(ctx.settings)
    job = jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(tiny_model_dir), LONG)
    wait_until(lambda: _train_steps(ctx, job.id) >= 5, 180, interval=0.5, what="the job's first steps")

    alone = _rate(ctx, job.id, WINDOW_SECONDS)

    latencies: list[float] = []
    errors: list[str] = []
    stop = threading.Event()

    def dashboard() -> None:  # what a watched Jobs tab asks (dashboard.js and live_plot.js), 5x as often
        with httpx.Client(base_url=url, timeout=30) as client:
            after, keys = -1, {}
            while not stop.is_set():
                for path, params in ((f"/api/jobs/{job.id}/dashboard", keys), (f"/api/jobs/{job.id}/metrics", {"after_step": after})):
                    started = time.monotonic()
                    response = client.get(path, params=params)
                    latencies.append(time.monotonic() - started)
                    if response.status_code >= 300:
                        errors.append(f"{path}: {response.status_code}")
                    elif "metrics" in path and response.json():
                        after = response.json()[-1]["step"]
                    elif "dashboard" in path:
                        keys = response.json()["keys"]
                stop.wait(1.0)

    threads = [threading.Thread(target=dashboard) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        watched = _rate(ctx, job.id, WINDOW_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    jobs.cancel_job(ctx, job.id)

    p50 = statistics.median(latencies) * 1000
    p95 = statistics.quantiles(latencies, n=20)[18] * 1000
    print(f"\n{CLIENTS} dashboard clients, {len(latencies)} requests: p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
          f"{len(errors)} errors; training {alone:.2f} steps/s alone, {watched:.2f} steps/s watched "
          f"({watched / alone if alone else float('nan'):.2f}x)")
    assert not errors, errors[:10]
    assert watched > 0, "training stopped while the dashboards polled"
