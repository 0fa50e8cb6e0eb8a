"""Keeps this worker's row in the worker registry (studio/workers.py) while it runs.

The row is written by a small process beside the Celery parent, started when the worker
is ready and stopped when it shuts down. The parent forks the pool processes that train,
so it must hold neither a CUDA context nor a thread inside SQLite at a fork; and the
device is detected in a one-shot child so that the registry process holds no CUDA context
(hundreds of MB of GPU memory) for the worker's whole life either. Once registered, it
times a few seconds of training in another such child (worker/calibrate.py) and adds the
measured speed to the row, for time estimates before any job has finished.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace

from studio.core.estimate import Device, detect_device

log = logging.getLogger(__name__)

_process: subprocess.Popen | None = None
_calibrating: subprocess.Popen | None = None  # the calibration child, while it runs


def start(sender, **_kwargs) -> None:
    """celery worker_ready: start the registry process for this node (sender.hostname)."""
    global _process
    _process = subprocess.Popen([sys.executable, "-m", "worker.registry", sender.hostname])


def stop(**_kwargs) -> None:
    """celery worker_shutdown: the registry process removes the row as it exits."""
    if _process is not None and _process.poll() is None:
        _process.terminate()
        try:
            _process.wait(10)
        except subprocess.TimeoutExpired:
            _process.kill()


def probe_device() -> Device:
    """This machine's device, as a child process sees it."""
    out = subprocess.run(
        [sys.executable, "-m", "worker.registry", "--detect"], capture_output=True, text=True, timeout=300, check=True
    )
    return Device(**json.loads(out.stdout.strip().splitlines()[-1]))


def probe_speed() -> float:
    """Training FLOP/s here, from a calibration child (0.0 when it failed: the estimate
    then falls back to a rate from the device kind)."""
    global _calibrating
    try:
        _calibrating = subprocess.Popen(
            [sys.executable, "-m", "worker.calibrate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        out, err = _calibrating.communicate(timeout=300)
        if _calibrating.returncode != 0:
            raise RuntimeError(err.strip().splitlines()[-1] if err.strip() else f"exit {_calibrating.returncode}")
        return float(json.loads(out.strip().splitlines()[-1])["flops"])
    except Exception as exc:  # noqa: BLE001 (a failed calibration must not stop the worker)
        log.warning("worker calibration failed: %s", exc)
        return 0.0


def _stop_calibrating() -> None:
    """A worker stopping mid-calibration leaves no child behind."""
    if _calibrating is not None and _calibrating.poll() is None:
        _calibrating.kill()
        _calibrating.wait()


def keep_registered(name: str) -> None:
    """Register, then refresh the row every heartbeat until the worker (our parent) is gone
    or we are told to stop; a graceful end deletes the row, a killed worker's row just
    goes stale."""
    from studio.db import make_engine
    from studio.models import utcnow
    from studio.settings import get_settings
    from studio.workers import register, unregister

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()
    settings = get_settings()
    device = probe_device()
    log.info("worker %s trains on %s", name, device)
    engine = make_engine(settings.db_url)
    started = utcnow()
    next_beat = 0.0
    measured: list[float] = []  # the calibration's result, from its thread
    calibration = threading.Thread(target=lambda: measured.append(probe_speed()), daemon=True)
    try:
        while os.getppid() == parent:
            if settings.worker_calibrate and next_beat > 0 and calibration.ident is None:
                calibration.start()  # once registered: the worker is listed (and beats) meanwhile
            if measured and not device.flops:
                device = replace(device, flops=measured[0] or -1.0)  # -1: failed, not measured again
                log.info("worker %s calibrated: %.3g training FLOP/s", name, device.flops)
                next_beat = 0.0
            if time.monotonic() >= next_beat:
                try:
                    register(engine, name, device, started)
                except Exception as exc:  # the schema not migrated yet, the DB busy: try next beat
                    log.warning("worker registry: %s", exc)
                next_beat = time.monotonic() + settings.worker_heartbeat_seconds
            time.sleep(0.5)
    finally:
        _stop_calibrating()
        try:
            unregister(engine, name)
        finally:
            engine.dispose()


if __name__ == "__main__":
    if sys.argv[1:] == ["--detect"]:
        print(json.dumps(asdict(detect_device())))
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        keep_registered(sys.argv[1])
