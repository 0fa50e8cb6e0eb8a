"""Runs side by side, measured speed and readable job facts, on a real SQLite DB: jobs made
by the jobs service, claimed and finished through the lifecycle functions a worker uses,
their metrics stored by the same ingestion the event channel uses. Then the compare route
over HTTP on a real `studio serve`."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from studio import lifecycle, workers
from studio.core.estimate import GIB, Device
from studio.core.events import Event, EventKind
from studio.ingest import store_events
from studio.models import JobStatus, utcnow
from studio.services import compare, datasets, jobs, speed

HOST = socket.gethostname()
CPU = Device(False, "CPU", 8 * GIB, False, False, cpus=2)


def _dataset(ctx) -> int:
    body = "".join(json.dumps({"instruction": f"Say {i}", "output": f"{i}"}) + "\n" for i in range(40)).encode()
    return datasets.create_dataset(ctx, "numbers.jsonl", body)[0].id


def _finished_job(ctx, dataset_id: int, learning_rate: float, seconds_per_step: float, rate: float) -> int:
    """A job that ran 10 steps (eval every 5, a 20 s eval pause) and succeeded."""
    job = jobs.create_job(ctx, dataset_id, "demo", {"training": {"learning_rate": learning_rate, "sample_every": 5}})
    owner = f"{HOST}:{1000 + job.id}"
    lifecycle.claim_job(ctx.engine, job.id, owner, 60)
    start = utcnow().timestamp()
    events, now = [Event(job_id=job.id, kind=EventKind.eval_metrics, step=0, data={"loss": 3.0}, ts=start + 1)], start + 2
    for step in range(1, 11):
        now += seconds_per_step + (20.0 if step % 5 == 0 else 0.0)
        if step % 5 == 0:
            events.append(Event(job_id=job.id, kind=EventKind.eval_metrics, step=step,
                                data={"loss": 3.0 - step / 10, "exact_match": step / 20}, ts=now - 0.01))
        events.append(Event(job_id=job.id, kind=EventKind.train_metrics, step=step,
                            data={"loss": 3.0 - step / 8, "tokens_per_second": rate, "epoch": step / 5}, ts=now))
    store_events(ctx.engine, events)
    lifecycle.set_progress(ctx.engine, job.id, owner, 10, 10)
    assert lifecycle.finish_job(ctx.engine, job.id, owner, JobStatus.succeeded)
    return job.id


def test_compare_shows_curves_a_summary_and_only_the_settings_that_differ(ctx):
    dataset_id = _dataset(ctx)
    first = _finished_job(ctx, dataset_id, 1e-3, 0.5, 800.0)
    second = _finished_job(ctx, dataset_id, 3e-3, 0.25, 1600.0)
    result = compare.compare_jobs(ctx, [first, second])

    assert [d.field for d in result.differences] == ["training.learning_rate"]
    assert result.differences[0].values == {first: 1e-3, second: 3e-3}
    summary = {s.job_id: s for s in result.jobs}
    assert summary[first].dataset == "numbers v1"
    assert summary[first].final_eval_loss == pytest.approx(2.0) and summary[first].best_exact_match == 0.5
    assert summary[first].tokens_per_second == 800.0 and summary[second].tokens_per_second == 1600.0
    curves = {c.job_id: c for c in result.curves}[first]
    assert [p.step for p in curves.eval] == [0, 5, 10] and [p.step for p in curves.train] == list(range(1, 11))
    # trained tokens: each step's rate times its time; the eval pause at step 5 counts too (the rate includes it)
    assert curves.train[1].tokens == pytest.approx(800 * 0.5, rel=0.01)
    assert curves.eval[1].epoch == 1.0 and curves.eval[0].tokens == 0.0

    with pytest.raises(ValueError, match="at least two"):
        compare.parse_ids("3,3")
    with pytest.raises(ValueError, match="numbers separated by commas"):
        compare.parse_ids("1,x")
    assert compare.parse_ids(" 1, 2,3 ") == [1, 2, 3]


def test_measured_speed_gives_a_range_that_the_device_and_method_pick(ctx):
    dataset_id = _dataset(ctx)
    _finished_job(ctx, dataset_id, 1e-3, 0.5, 800.0)
    workers.register(ctx.engine, f"worker@{HOST}", CPU, utcnow())
    runs = speed.run_speeds(ctx, "demo", "lora")
    assert [(r.device, r.tokens_per_second) for r in runs] == [("CPU x 2", 800.0)]
    assert runs[0].eval_seconds == pytest.approx(20.0)  # the pause, not the step rate
    assert speed.run_speeds(ctx, "demo", "full") == []

    config = jobs.make_config("demo", 1, {"training": {"sample_every": 5}}, None)
    estimate, tokens = speed.launch_estimate(ctx, config, steps=100, tokens_per_row=50.0, total_params=10**6, device=CPU)
    assert tokens == 100 * 16 * 50  # the demo preset: batch 16
    assert estimate.basis == "measured" and estimate.low < tokens / 800 + 21 * 20 < estimate.high
    rough, _ = speed.launch_estimate(ctx, config.model_copy(update={"adapter": config.adapter.model_copy(
        update={"method": "full"})}), steps=100, tokens_per_row=50.0, total_params=10**6, device=CPU)
    assert rough.basis == "rough"


def test_checkpoints_say_whether_they_are_still_on_disk_and_the_dataset_reads_as_shown(ctx):
    job_id = _finished_job(ctx, _dataset(ctx), 1e-3, 0.5, 800.0)
    kept = ctx.settings.artifacts_root / f"jobs/{job_id}/checkpoints/checkpoint-10"
    kept.mkdir(parents=True)
    store_events(ctx.engine, [
        Event(job_id=job_id, kind=EventKind.checkpoint, step=5, data={"path": f"jobs/{job_id}/checkpoints/checkpoint-5"}),
        Event(job_id=job_id, kind=EventKind.checkpoint, step=10, data={"path": f"jobs/{job_id}/checkpoints/checkpoint-10"}),
    ])
    assert [(c.step, c.on_disk) for c in jobs.job_checkpoints(ctx, job_id)] == [(5, False), (10, True)]
    assert jobs.job_dataset(ctx, job_id).label == "numbers v1"


def test_the_compare_route_answers_and_names_bad_input(settings, ctx, start_server):
    dataset_id = _dataset(ctx)
    first = _finished_job(ctx, dataset_id, 1e-3, 0.5, 800.0)
    second = _finished_job(ctx, dataset_id, 3e-3, 0.25, 1600.0)
    url = start_server(settings)
    with httpx.Client(base_url=url, timeout=30) as client:
        body = client.get("/api/jobs/compare", params={"ids": f"{first},{second}"}).json()
        assert [j["job_id"] for j in body["jobs"]] == [first, second]
        assert body["differences"][0]["field"] == "training.learning_rate"
        for ids, says in (("1", "at least two"), ("1,a", "numbers"), ("", "at least two")):
            response = client.get("/api/jobs/compare", params={"ids": ids})
            assert response.status_code == 422 and says in response.json()["detail"], response.text
        missing = client.get("/api/jobs/compare", params={"ids": f"{first},999"})
        assert missing.status_code == 404 and "job 999" in missing.json()["detail"]
        assert client.get("/api/jobs/compare").status_code == 422  # no ids at all
