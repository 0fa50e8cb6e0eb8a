"""What the studio adds on top of training, on the embedded broker and on Redis.

Prints, for the demo base + demo dataset + demo preset (capped at --steps steps):
  1. wall time of a job through the studio (HTTP launch -> succeeded, worker already
     running) divided by the same recipe called directly in one process (goal <= 1.10),
     plus a plain transformers + peft Trainer run of the same steps for reference;
  2. launch -> first training step, model load excluded (goal <= 2 s embedded,
     <= 0.5 s Redis), split into queue wait (POST -> claim) and setup;
  3. metric recorded by the worker -> visible through the dashboard's data (the API
     the dashboard reads), median and p95 over every step.

    python bench/overhead.py [--steps 60] [--brokers embedded,redis]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import Processes, make_settings, server_starter, worker_starter  # noqa: E402


def studio_job(settings, steps: int, processes: Processes) -> dict:
    url = server_starter(processes)(settings)
    worker_starter(processes)(settings)
    client = httpx.Client(base_url=url, timeout=30)
    from studio.core.demo import demo_dataset

    body = "".join(json.dumps(r) + "\n" for r in demo_dataset())
    dataset_id = client.post("/api/datasets", files={"file": ("demo.jsonl", body.encode())}).json()["id"]
    # a warm-up job so the worker's pool process is forked and imports are done, as in a
    # studio that has been up for a while
    _run_job(client, dataset_id, 2, settings)
    return _run_job(client, dataset_id, steps, settings, watch_metrics=True)


def _run_job(client, dataset_id: int, steps: int, settings, watch_metrics: bool = False) -> dict:
    seen: dict[int, float] = {}
    done = threading.Event()
    t_post = time.time()
    job = client.post(
        "/api/jobs", json={"dataset_id": dataset_id, "base_model": "demo", "config": {"training": {"max_steps": steps}}}
    ).json()

    def poll_metrics():  # what the dashboard reads, polled far faster than its 1 s timer
        while not done.is_set():
            for point in client.get(f"/api/jobs/{job['id']}/metrics").json():
                if point["split"] == "train":
                    seen.setdefault(point["step"], time.time())
            time.sleep(0.02)

    poller = threading.Thread(target=poll_metrics, daemon=True)
    if watch_metrics:
        poller.start()
    while (status := client.get(f"/api/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.05)
    t_done = time.time()
    done.set()
    if watch_metrics:
        poller.join()
    assert status["status"] == "succeeded", status
    return {"t_post": t_post, "t_done": t_done, "job": status, "seen": seen, "settings": settings}


def timeline(settings, job_id: int) -> dict:
    """Worker-side timestamps from the DB: claim, setup phases, metric record times."""
    from sqlmodel import Session, select

    from studio.db import engine_for
    from studio.models import Job, JobLog, MetricPoint

    with Session(engine_for(settings.db_url)) as session:
        job = session.get(Job, job_id)
        logs = session.exec(select(JobLog).where(JobLog.job_id == job_id)).all()
        points = session.exec(select(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.split == "train")).all()
    stamps = {}
    for line in logs:
        for marker in ("data:", "model ready", "training started"):
            if line.message.startswith(marker):
                stamps[marker] = line.created_at.timestamp()
    return {
        "claimed": job.started_at.timestamp(),
        "data": stamps["data:"],
        "model": stamps["model ready"],
        "train": stamps["training started"],
        "recorded": {p.step: p.recorded_at for p in points},
    }


def direct_recipe(steps: int, workdir: Path) -> float:
    """The same recipe, called in this process with no queue, HTTP or worker."""
    from studio.core.demo import demo_dataset
    from studio.services import datasets
    from studio.services.context import StudioContext
    from worker import recipe
    from studio.eventbus import DbSink
    from worker.callbacks import EventWriter, JobRun
    from studio.core.config import build_config, DEMO_PRESET
    from studio.core.paths import JobPaths
    from studio.core.datasets import snapshot_bytes

    settings = make_settings(workdir / "direct")
    ctx = StudioContext.from_settings(settings)
    body = snapshot_bytes(demo_dataset())
    dataset, _ = datasets.create_dataset(ctx, "demo.jsonl", body)
    config = build_config({"training": {"max_steps": steps}}, preset=DEMO_PRESET)
    start = time.perf_counter()
    writer = EventWriter(DbSink(ctx.engine))
    run = JobRun(
        job_id=0, owner="bench", attempt=1, config=config, paths=JobPaths(settings.artifacts_root, 0),
        snapshot=datasets.snapshot_path(ctx, dataset.version_id), engine=ctx.engine, lease_seconds=60, writer=writer,
    )
    run.emit = lambda *a, **k: None  # no job row to attach events to
    run.progress = lambda *a, **k: None
    assert recipe.run(run) == "succeeded"
    writer.close()
    return time.perf_counter() - start


def plain_trainer(steps: int, workdir: Path) -> float:
    """Plain transformers + peft: same model, data, LoRA and steps; no probes or eval."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from studio.core.config import DEMO_PRESET, build_config
    from studio.core.demo import demo_base_dir, demo_dataset
    from studio.core.templates import encode_example

    cfg = build_config({"training": {"max_steps": steps}}, preset=DEMO_PRESET)
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(demo_base_dir())
    rows = [encode_example(tok, r, cfg.training.max_length) for r in demo_dataset()]
    data = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels} for e in rows if e]
    model = AutoModelForCausalLM.from_pretrained(demo_base_dir(), dtype=torch.float32)
    a = cfg.adapter
    model = get_peft_model(model, LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules="all-linear", task_type="CAUSAL_LM"))
    t = cfg.training
    args = TrainingArguments(
        output_dir=str(workdir / "plain"), per_device_train_batch_size=t.batch_size, learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler, warmup_steps=t.warmup_ratio, max_steps=steps, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=t.seed,
    )
    Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorForSeq2Seq(tok, padding=True)).train()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--brokers", default="embedded,redis")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    print(f"steps={args.steps}  cpus={os.cpu_count()}  workdir={workdir}")
    direct = direct_recipe(args.steps, workdir)
    plain = plain_trainer(args.steps, workdir)
    print(f"recipe called directly:           {direct:7.2f} s")
    print(f"plain transformers+peft Trainer:  {plain:7.2f} s  (no probes / eval; reference)")
    for broker in args.brokers.split(","):
        overrides = {}
        if broker == "redis":
            overrides["broker_url"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
        settings = make_settings(workdir / broker, **overrides)
        processes = Processes(Path(tempfile.mkdtemp(prefix=f"logs-{broker}-")))
        try:
            result = studio_job(settings, args.steps, processes)
        finally:
            processes.stop_all()
        line = timeline(settings, result["job"]["id"])
        wall = result["t_done"] - result["t_post"]
        queue_wait = line["claimed"] - result["t_post"]
        setup = (line["data"] - line["claimed"]) + (line["train"] - line["model"])
        lat = sorted(result["seen"][s] - line["recorded"][s] for s in result["seen"] if s in line["recorded"])
        print(f"\n[{broker}]")
        print(f"  studio job wall (launch -> succeeded): {wall:7.2f} s   ratio to direct recipe: {wall / direct:.3f} (goal <= 1.10)")
        print(f"  launch -> first step, model load excluded: {queue_wait + setup:.3f} s "
              f"(queue wait {queue_wait:.3f} s + setup {setup:.3f} s; model load {line['model'] - line['data']:.3f} s)")
        print(f"  metric recorded -> visible in dashboard data: median {statistics.median(lat) * 1000:.0f} ms, "
              f"p95 {lat[int(0.95 * (len(lat) - 1))] * 1000:.0f} ms over {len(lat)} steps (+ the UI's 1 s refresh)")


if __name__ == "__main__":
    main()
