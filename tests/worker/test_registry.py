"""A real Celery worker process registers the device it trains on, keeps its row fresh
and removes it when it stops; the studio's preview then names it."""

from __future__ import annotations

import os
import signal
import socket
import time

from studio.core.estimate import GIB, detect_device
from studio.services import jobs
from studio.services.context import StudioContext
from tests.conftest import make_settings, upload_file, wait_until


def test_worker_registers_refreshes_and_unregisters(tmp_path, alpaca_file, start_worker):
    settings = make_settings(tmp_path / "d", worker_heartbeat_seconds=0.5)
    ctx = StudioContext.from_settings(settings)
    proc = start_worker(settings, name="reg")
    started = time.monotonic()
    [worker] = wait_until(lambda: jobs.list_workers(ctx), 120, what="the worker to register")
    print(f"\nworker registered {time.monotonic() - started:.1f} s after it was started")
    here = detect_device()
    assert worker.name == f"reg0@{socket.gethostname()}" and worker.alive
    assert (worker.device, worker.cuda, worker.bf16) == (here.name, here.cuda, here.bf16)
    assert worker.memory_gib == round(here.memory_bytes / GIB, 1)
    first_seen = worker.seconds_since_seen
    time.sleep(2)
    assert jobs.list_workers(ctx)[0].seconds_since_seen <= first_seen + 1.0  # refreshed, not silent
    preview = jobs.preview_launch(ctx, upload_file(ctx, alpaca_file), "demo")
    assert preview.runs_on.startswith(f"{worker.name} (")
    assert not any("No worker" in w for w in preview.plan.warnings)

    os.killpg(proc.pid, signal.SIGTERM)  # what `studio up` does on Ctrl-C
    proc.wait(60)
    wait_until(lambda: jobs.list_workers(ctx) == [], 20, what="the stopped worker's row to go")


def test_a_killed_worker_leaves_no_live_row(ctx, start_worker):
    proc = start_worker(ctx.settings, name="gone")
    wait_until(lambda: jobs.list_workers(ctx), 120, what="the worker to register")
    os.kill(proc.pid, signal.SIGKILL)  # the Celery parent only: its registry process notices
    wait_until(lambda: jobs.list_workers(ctx) == [], 20, what="the killed worker's row to go")


def test_a_worker_times_its_training_speed_for_the_first_estimate(tmp_path, alpaca_file, start_worker):
    # Before any job finished, the time estimate rests on the worker's own calibration run,
    # not on a typical rate for its kind of device.
    settings = make_settings(tmp_path / "d", worker_heartbeat_seconds=0.5, worker_calibrate=True)
    ctx = StudioContext.from_settings(settings)
    dataset_id = upload_file(ctx, alpaca_file)
    guessed = jobs.preview_launch(ctx, dataset_id, "demo").estimate  # no worker yet: the typical rate
    start_worker(settings, name="cal")
    [worker] = wait_until(lambda: [w for w in jobs.list_workers(ctx) if w.training_flops > 0], 240,
                          what="the worker's calibration")
    print(f"\ncalibrated: {worker.training_flops:.3g} training FLOP/s")
    assert worker.alive
    preview = jobs.preview_launch(ctx, dataset_id, "demo")
    assert preview.estimate.detail == "calibrated" and guessed.detail != "calibrated"
    assert preview.estimate.rate != guessed.rate
