"""What the studio adds on top of training, on the embedded broker and on Redis.

For the demo base + demo dataset + demo preset, capped at --steps steps, prints:
  1. the wall time of a job through the studio (HTTP launch -> succeeded in the DB; a
     `studio serve` and a `studio worker` subprocess, queue, worker pool process, events
     into the DB) divided by the same recipe called directly in this process (goal
     <= 1.10); best of --repeats each, each studio job right after a direct call so the
     pair shares the machine's load, plus a plain transformers + peft Trainer run of the
     same steps for reference;
  2. launch -> first training step (the first step's metric), model load excluded (goal
     <= 2 s embedded, <= 0.5 s Redis), split into queue wait (POST -> claimed by the
     worker) and the recipe's own setup (data, Trainer, the first step; an adapter's
     step-0 evaluation runs just after it), next to the same setup in the direct call:
     the difference is the studio's;
  3. metric recorded by the worker -> visible in the dashboard's data (GET
     /api/jobs/{id}/metrics, which the Jobs tab reads), median and p95 over every step,
     polled every 20 ms in a job of its own (fast polling costs CPU the timed jobs keep).

    python bench/overhead.py [--steps 30] [--repeats 2] [--brokers embedded,redis]
    python bench/overhead.py --quick      # 10 steps, one repeat

Redis: a private redis-server on a free port (never a Redis this script did not start), or
BENCH_REDIS_URL if set (its database is used as is; skipped if it does not answer).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: keep script names from shadowing packages

from tests.conftest import Processes, make_settings, server_starter, wait_until, worker_starter  # noqa: E402

TERMINAL = ("succeeded", "failed", "cancelled")
IDLE_GAP = 2.0  # seconds a timed job waits after the previous one: launched on an idle worker


def job_config(steps: int) -> dict:
    """The demo preset capped at `steps`, scoring 8 held-out answers per evaluation instead
    of the preset's 64: the same for the direct call, and the job stays short enough on 2
    cores to time it repeatedly (evaluation is the recipe's work, not the studio's)."""
    return {"training": {"max_steps": steps}, "data": {"exact_match_rows": 8}}


def _ts(value: datetime) -> float:
    """Unix seconds of a DB datetime (SQLite hands them back without a zone: UTC)."""
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


def _phases(logs: dict[str, float], first_step: float, start: float) -> dict[str, float]:
    """Seconds of each setup phase, from the recipe's log lines and its first metric."""
    return {
        "to_data": logs["data:"] - start,
        "model_load": logs["model ready"] - logs["data:"],
        "to_first_step": first_step - logs["model ready"],
    }


# --- the recipe called directly ---------------------------------------------------------


def direct_recipe(steps: int, workdir: Path) -> dict:
    """The same recipe in this process: no HTTP, queue, worker or DB events."""
    from studio.core.config import DEMO_PRESET, build_config
    from studio.core.datasets import snapshot_bytes
    from studio.core.demo import demo_dataset
    from studio.core.events import EventKind
    from studio.core.paths import JobPaths
    from studio.eventbus import DbSink
    from studio.services import datasets
    from studio.services.context import StudioContext
    from worker import recipe
    from worker.callbacks import EventWriter, JobRun

    settings = make_settings(Path(tempfile.mkdtemp(prefix="direct-", dir=workdir)))
    ctx = StudioContext.from_settings(settings)
    dataset, _ = datasets.create_dataset(ctx, "demo.jsonl", snapshot_bytes(demo_dataset()))
    config = build_config(job_config(steps), preset=DEMO_PRESET)
    events: list[tuple[str, int, dict, float]] = []
    start = time.time()
    writer = EventWriter(DbSink(ctx.engine))
    run = JobRun(
        job_id=0, owner="bench", attempt=1, config=config, paths=JobPaths(settings.artifacts_root, 0),
        snapshot=datasets.snapshot_path(ctx, dataset.version_id), engine=ctx.engine, lease_seconds=60, writer=writer,
    )
    run.emit = lambda kind, step=0, **data: events.append((kind, step, data, time.time()))  # no job row to attach to
    run.progress = lambda *a, **k: None
    assert recipe.run(run) == "succeeded"
    writer.close()
    wall = time.time() - start
    logs = {m: t for kind, _, data, t in events if kind == EventKind.log for m in ("data:", "model ready") if data["message"].startswith(m)}
    first = min(t for kind, _, _, t in events if kind == EventKind.train_metrics)
    return {"wall": wall, **_phases(logs, first, start)}


def plain_trainer(steps: int, workdir: Path) -> float:
    """Plain transformers + peft: same model, data, LoRA and steps; no probes or eval."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

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
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorForSeq2Seq(tok, padding=True))
    trainer.remove_callback(PrinterCallback)  # no log line per step in the figures
    trainer.train()
    return time.perf_counter() - start


# --- jobs through the studio -------------------------------------------------------------


def run_job(client: httpx.Client, dataset_id: int, steps: int, poll_metrics: bool = False) -> dict:
    """Launch a job over HTTP and wait for it. With poll_metrics, record when each train
    metric first shows in GET /api/jobs/{id}/metrics (polled every 20 ms)."""
    seen: dict[int, float] = {}
    done = threading.Event()
    t_post = time.time()
    response = client.post(
        "/api/jobs", json={"dataset_id": dataset_id, "base_model": "demo", "config": job_config(steps)}
    )
    response.raise_for_status()
    job_id = response.json()["id"]

    def poll():  # what the dashboard reads, polled far faster than its 1 s timer
        while not done.is_set():
            for point in client.get(f"/api/jobs/{job_id}/metrics").json():
                if point["split"] == "train":
                    seen.setdefault(point["step"], time.time())
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    if poll_metrics:
        poller.start()
    # the end time comes from the DB, so a slow poll here costs no accuracy (and no CPU)
    while (status := client.get(f"/api/jobs/{job_id}").json())["status"] not in TERMINAL:
        time.sleep(0.02 if poll_metrics else 0.5)
    done.set()
    if poll_metrics:
        poller.join()
    if status["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {status['status']}: {status.get('error')}")
    return {"id": job_id, "t_post": t_post, "seen": seen}


def timeline(settings, job_id: int) -> dict:
    """Worker-side timestamps from the DB: claimed, finished, log lines, metric times."""
    from sqlmodel import Session, select

    from studio.db import engine_for
    from studio.models import Job, JobLog, MetricPoint

    with Session(engine_for(settings.db_url)) as session:
        job = session.get(Job, job_id)
        logs = session.exec(select(JobLog).where(JobLog.job_id == job_id)).all()
        points = session.exec(select(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.split == "train")).all()
    stamps = {m: _ts(line.created_at) for line in logs for m in ("data:", "model ready") if line.message.startswith(m)}
    recorded = {p.step: p.recorded_at for p in points}
    return {
        "claimed": _ts(job.started_at),
        "finished": _ts(job.finished_at),
        "logs": stamps,
        "first_step": min(recorded.values()),
        "recorded": recorded,
    }


def studio_runs(settings, steps: int, repeats: int, processes: Processes, workdir: Path) -> dict:
    """Timed studio jobs, each right after a direct call of the recipe (pairs share the
    machine's load of the moment), then one job for the metric latency."""
    url = server_starter(processes)(settings)
    worker = worker_starter(processes)(settings)
    worker_log = processes.log_dir / f"worker-{len(processes.procs) - 1}.log"
    wait_until(lambda: worker.poll() is None and b"ready." in worker_log.read_bytes(), 90, interval=0.25,
               what="the worker to be ready")
    from studio.core.demo import demo_dataset

    client = httpx.Client(base_url=url, timeout=30)
    body = "".join(json.dumps(r) + "\n" for r in demo_dataset()).encode()
    dataset_id = client.post("/api/datasets", files={"file": ("demo.jsonl", body)}).json()["id"]
    # a warm-up job: the server's job code paths and the OS file cache, as in a studio
    # that has been up a while (each job still gets a fresh pool process: max_tasks_per_child=1)
    run_job(client, dataset_id, 2)
    timed, directs = [], []
    for _ in range(repeats):
        with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's log line per step
            directs.append(direct_recipe(steps, workdir))
        time.sleep(IDLE_GAP)
        job = run_job(client, dataset_id, steps)
        line = timeline(settings, job["id"])
        timed.append({
            "wall": line["finished"] - job["t_post"],
            "queue": line["claimed"] - job["t_post"],
            **_phases(line["logs"], line["first_step"], line["claimed"]),
        })
    # launched the moment the previous job ended: the worker is still replacing its pool process
    job = run_job(client, dataset_id, max(5, steps // 2), poll_metrics=True)
    line = timeline(settings, job["id"])
    latency = sorted(job["seen"][s] - line["recorded"][s] for s in job["seen"] if s in line["recorded"])
    client.close()
    return {"timed": timed, "directs": directs, "latency": latency, "back_to_back_queue": line["claimed"] - job["t_post"]}


@contextlib.contextmanager
def private_redis():
    """A redis-server of our own on a free port, or None when the binary is missing."""
    import shutil
    import socket
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            if redis_answers(url):
                break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


def seconds(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def best(runs: list[dict], key: str) -> dict:
    return min(runs, key=lambda r: r[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each kind; the best is kept")
    parser.add_argument("--brokers", default="embedded,redis")
    parser.add_argument("--quick", action="store_true", help="10 steps, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 10, 1
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    print(f"steps={args.steps}  repeats={args.repeats} (best of)  cpus={os.cpu_count()}  "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}  workdir={workdir}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the subprocesses on the way out
    with contextlib.redirect_stdout(io.StringIO()):
        plain = plain_trainer(args.steps, workdir)
    print(f"plain transformers+peft Trainer: {plain:7.2f} s  (same steps, no probes / eval; reference)", flush=True)
    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("BENCH_REDIS_URL")
        if redis_url is None and "redis" in args.brokers:
            redis_url = stack.enter_context(private_redis())
        run_brokers(args, workdir, redis_url)


def run_brokers(args, workdir: Path, redis_url: str | None) -> None:
    for broker in args.brokers.split(","):
        overrides = {}
        if broker == "redis":
            if not redis_url or not redis_answers(redis_url):
                print(f"\n[redis] skipped: {'nothing answers at ' + redis_url if redis_url else 'no redis-server binary'}")
                continue
            overrides["broker_url"] = redis_url
        settings = make_settings(workdir / broker, **overrides)
        processes = Processes(Path(tempfile.mkdtemp(prefix=f"logs-{broker}-")))
        try:
            result = studio_runs(settings, args.steps, args.repeats, processes, workdir)
        except Exception:
            print(processes.logs())
            raise
        finally:
            processes.stop_all()
        timed, directs, lat = result["timed"], result["directs"], result["latency"]
        job, direct = best(timed, "wall"), best(directs, "wall")
        ratios = [t["wall"] / d["wall"] for t, d in zip(timed, directs)]
        first = min(timed, key=lambda r: r["queue"] + r["to_data"] + r["to_first_step"])
        launch = first["queue"] + first["to_data"] + first["to_first_step"]
        setup_direct = min(d["to_data"] + d["to_first_step"] for d in directs)
        goal = 2.0 if broker == "embedded" else 0.5
        print(f"\n[{broker}]")
        print(f"  recipe called directly: {direct['wall']:7.2f} s (runs {seconds(d['wall'] for d in directs)}); "
              f"studio job (launch -> succeeded): {job['wall']:7.2f} s (runs {seconds(t['wall'] for t in timed)})")
        print(f"  ratio studio / direct: best {job['wall'] / direct['wall']:.3f}, per interleaved pair "
              f"{seconds(ratios)} (goal <= 1.10)")
        print(f"  launch -> first step, model load excluded: {launch:.3f} s (goal <= {goal} s): queue wait "
              f"{first['queue']:.3f} s + data {first['to_data']:.3f} s + Trainer and first step "
              f"{first['to_first_step']:.3f} s; model load {first['model_load']:.3f} s")
        print(f"    the same setup in the direct call: {setup_direct:.3f} s; the studio's part: queue wait "
              f"{first['queue']:.3f} s (idle worker), {result['back_to_back_queue']:.3f} s for a job launched as the "
              "previous one ended")
        print(f"  metric recorded -> visible in dashboard data: median {statistics.median(lat) * 1000:.0f} ms, "
              f"p95 {lat[int(0.95 * (len(lat) - 1))] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms over {len(lat)} steps "
              "(+ the Jobs tab's 1 s refresh)", flush=True)


if __name__ == "__main__":
    main()
