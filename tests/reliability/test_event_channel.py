"""Remote-worker events over a Redis stream: restarting the studio (R6) or Redis itself
(R5) mid-job loses nothing and doubles nothing. Each test prints its figures."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from studio.db import session_scope
from studio.models import Checkpoint, JobLog, JobStatus, MetricPoint, Sample
from studio.services import jobs
from studio.services.context import StudioContext
from tests.conftest import free_port, make_settings, upload_file, wait_finished, wait_until
from tests.reliability.test_crashes import RESUMABLE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary (apt-get install redis-server)"),
]


class PrivateRedis:
    """A redis-server of the test's own that persists every write (appendfsync always),
    so it can be killed and restarted like a production Redis with AOF."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        import redis

        wait_until(lambda: _pings(redis, self.url), 10, what="private redis-server")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def _pings(redis, url) -> bool:
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=0.3).ping()
    except Exception:
        return False


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


def _stored(ctx, job_id) -> int:
    with session_scope(ctx.engine) as session:
        return sum(
            session.exec(select(func.count()).select_from(table).where(table.job_id == job_id)).one()
            for table in (MetricPoint, Sample, Checkpoint, JobLog)
        )


def _emitted(processes, job_id) -> int:
    text = "".join(p.read_text(errors="replace") for p in processes.log_dir.glob("worker*.log"))
    counts = re.findall(rf"job {job_id} attempt \d+: events emitted: (\d+)", text)
    assert counts, "the worker did not report its events"
    return sum(int(c) for c in counts)


def _launch(tmp_path, private_redis, alpaca_file, tiny_model_dir, start_server, start_worker):
    settings = make_settings(tmp_path / "d", broker_url=private_redis.url, event_channel="redis")
    ctx = StudioContext.from_settings(settings)
    start_server(settings)
    start_worker(settings)
    job = jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(tiny_model_dir), RESUMABLE)
    wait_until(lambda: jobs.get_job(ctx, job.id).step >= 10, 180, what="training to pass step 10")
    return settings, ctx, job


def _settle(ctx, job, processes) -> tuple[int, int]:
    done = wait_finished(ctx, job.id, processes)
    assert done.status == JobStatus.succeeded, done.error
    emitted = _emitted(processes, job.id)
    wait_until(lambda: _stored(ctx, job.id) >= emitted, 30, what="the ingester to catch up")
    time.sleep(1.0)  # anything doubled would show up now
    return emitted, _stored(ctx, job.id)


@pytest.mark.db  # the studio's ingest replays the stream into the DB: also run on PostgreSQL
def test_r6_studio_restart_while_events_stream(tmp_path, private_redis, alpaca_file, tiny_model_dir,
                                               start_server, start_worker, processes):
    settings, ctx, job = _launch(tmp_path, private_redis, alpaca_file, tiny_model_dir, start_server, start_worker)
    server = next(p for p in processes.procs if "serve" in p.args)
    os.killpg(server.pid, signal.SIGKILL)
    stored_at_kill = _stored(ctx, job.id)
    time.sleep(2.0)  # events keep flowing into the stream while no studio reads them
    start_server(settings)
    emitted, stored = _settle(ctx, job, processes)
    print(f"\nR6: studio killed with {stored_at_kill} events stored, restarted 2 s later; "
          f"events emitted {emitted}, stored {stored}")
    assert stored == emitted
    assert sorted(m.step for m in jobs.job_metrics(ctx, job.id) if m.split == "train") == list(range(1, 41))


def test_r5_redis_restart_mid_job(tmp_path, private_redis, alpaca_file, tiny_model_dir,
                                  start_server, start_worker, processes):
    settings, ctx, job = _launch(tmp_path, private_redis, alpaca_file, tiny_model_dir, start_server, start_worker)
    private_redis.kill()
    down_at = time.monotonic()
    time.sleep(3.0)
    private_redis.start()
    print(f"\nR5: Redis down for {time.monotonic() - down_at:.1f} s mid-job")
    emitted, stored = _settle(ctx, job, processes)
    print(f"R5: events emitted {emitted}, stored {stored}, lost {emitted - stored}")
    assert stored == emitted
    assert sorted(m.step for m in jobs.job_metrics(ctx, job.id) if m.split == "train") == list(range(1, 41))
