"""Multi-GPU jobs: one training process per GPU under torchrun (DDP), the HF Trainer
doing the distributed parts.

The Celery task that claimed the job stays the job's owner: it keeps the lease and
watches the cancel flag (its Heartbeat), and runs `torchrun -m worker.distributed`
as a child process group. Rank 0 reports events and progress, evaluates and saves the
result; the other ranks only train. Cancel or a lost lease stops the whole group; the
last complete checkpoint stays, as in a one-process job.

On a CPU worker the ranks are CPU processes talking over gloo: slow, but it lets the
same path be tested without GPUs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque

import torch

from studio.settings import Settings
from worker import checkpoints
from worker.callbacks import JobRun
from worker.recipe import SetupError

STOP_GRACE_SECONDS = 10


class RankFailed(Exception):
    """A training process of a multi-GPU job failed; the message says what it printed."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_devices(wanted: int) -> str:
    """What the ranks will train on; RankFailed when this worker has too few GPUs."""
    if torch.cuda.is_available():
        have = torch.cuda.device_count()
        if have < wanted:
            raise RankFailed(
                f"This job asks for {wanted} GPUs (training.devices) but this worker sees {have}. "
                f"Lower training.devices or run it on a worker with {wanted} GPUs."
            )
        return f"{wanted} GPUs"
    return f"{wanted} CPU processes (no GPU on this worker)"


def run(job: JobRun, settings: Settings) -> str:
    """Train the job on training.devices processes; returns 'succeeded' or 'cancelled'."""
    devices = job.config.training.devices
    job.log(f"multi-device job: DDP over {check_devices(devices)}")
    checkpoints.prepare_resume(job.paths.checkpoints)  # once, before any rank looks
    log_path = job.paths.job_dir / f"ranks-attempt-{job.attempt}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc-per-node={devices}", "--master-addr=127.0.0.1", f"--master-port={_free_port()}",
        "-m", "worker.distributed", str(job.job_id), job.owner,
    ]  # fmt: skip
    env = {**os.environ, **settings.as_env()}
    with log_path.open("ab") as out:
        ranks = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while ranks.poll() is None:
            if job.stop.wait(0.2):
                _stop(ranks)
                break
    if job.stop.is_set():
        job.log("stopped: " + ("the lease was lost" if job.lease_lost else "cancelled by the user"))
        return "cancelled"
    if ranks.returncode != 0:
        raise RankFailed(
            f"A training process exited with code {ranks.returncode}: "
            f"{first_error(log_path.read_text(errors='replace'))} (full output: {job.paths.relative(log_path)})"
        )
    return "succeeded"


def first_error(output: str) -> str:
    """The exception line of the first traceback in the ranks' output (the cause; later
    ones are the launcher reporting it), without the module path of studio errors."""
    lines = output.splitlines()
    for start, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            for after in lines[start + 1 :]:
                if after and not after[0].isspace():
                    name, _, message = after.partition(": ")
                    return message if name == f"{SetupError.__module__}.{SetupError.__qualname__}" else after
    return "no traceback; " + " | ".join(deque((x for x in lines if x.strip()), maxlen=3))


def _stop(ranks: subprocess.Popen) -> None:
    """SIGTERM the launcher and its ranks, SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 30)):
        try:
            os.killpg(ranks.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while ranks.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if ranks.poll() is not None:
            return


def main(argv: list[str] | None = None) -> int:
    """One rank: `torchrun ... -m worker.distributed JOB_ID OWNER`."""
    from studio.db import engine_for, session_scope
    from studio.models import Job
    from studio.settings import get_settings
    from worker import recipe
    from worker.tasks import job_run

    parser = argparse.ArgumentParser(prog="python -m worker.distributed")
    parser.add_argument("job_id", type=int)
    parser.add_argument("owner")
    args = parser.parse_args(argv)
    settings = get_settings()
    engine = engine_for(settings.db_url)
    with session_scope(engine) as session:
        job = session.get(Job, args.job_id)
        session.expunge(job)
    if job.lease_owner != args.owner:
        print(f"job {args.job_id} is no longer held by {args.owner}", file=sys.stderr)
        return 1
    run = job_run(settings, engine, job, args.owner, primary=int(os.environ.get("RANK", "0")) == 0)
    run.log_scope = "rank0:"
    try:
        return 0 if recipe.run(run) == "succeeded" else 1
    finally:
        if run.writer is not None:
            run.writer.close()


if __name__ == "__main__":
    sys.exit(main())
