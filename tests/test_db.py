"""The database under load from many processes, on SQLite and (STUDIO_TEST_DB=postgres) on
PostgreSQL: workers racing to claim one job, replayed events stored once, and engines
that a forked worker process can use safely."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, text, update
from sqlmodel import select

from studio import lifecycle
from studio.core.events import Event, EventKind
from studio.db import PG_POOL_SIZE, engine_for, make_engine, session_scope, with_driver
from studio.ingest import store_events
from studio.models import Checkpoint, Job, JobLog, JobStatus, MetricPoint, Sample
from studio.services import jobs
from tests import databases
from tests.conftest import upload_file

pytestmark = pytest.mark.db

RACERS = 8
ROUNDS = 4
_fork = multiprocessing.get_context("fork")  # the way Celery's prefork pool starts its children


@pytest.fixture
def job_ids(ctx, alpaca_file):
    """ROUNDS queued jobs (stored through the service, as the studio does)."""
    dataset_id = upload_file(ctx, alpaca_file)
    return [jobs.create_job(ctx, dataset_id, "demo", {"training": {"max_steps": 2}}).id for _ in range(ROUNDS)]


def _claim_after(barrier, url: str, job_id: int, owner: str, results) -> None:
    barrier.wait(timeout=60)
    claimed = lifecycle.claim_job(engine_for(url), job_id, owner, lease_seconds=60)
    results.put((owner, claimed.lease_owner if claimed else None))


def _race_processes(url: str, job_id: int) -> list[str]:
    """RACERS forked processes claim job_id at once; returns the owners that won."""
    barrier, results = _fork.Barrier(RACERS), _fork.Queue()
    racers = [
        _fork.Process(target=_claim_after, args=(barrier, url, job_id, f"racer-{i}:0", results))
        for i in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(30)
        assert racer.exitcode == 0
    for owner, lease_owner in outcomes:
        assert lease_owner in (None, owner), "a claim returned a job leased to someone else"
    return [owner for owner, lease_owner in outcomes if lease_owner]


def _stored_job(ctx, job_id: int) -> Job:
    with session_scope(ctx.engine) as session:
        return session.get(Job, job_id)


def test_processes_racing_for_a_queued_job_exactly_one_wins(ctx, job_ids):
    lifecycle.claim_job(ctx.engine, -1, "warm-up:0", 60)  # the parent's pool holds a connection across the forks
    for job_id in job_ids:
        winners = _race_processes(ctx.settings.db_url, job_id)
        assert len(winners) == 1, f"job {job_id}: {len(winners)} of {RACERS} racers won ({winners})"
        job = _stored_job(ctx, job_id)
        assert (job.status, job.lease_owner, job.attempts) == (JobStatus.running, winners[0], 1)


def test_processes_racing_for_an_expired_lease_exactly_one_takes_it_over(ctx, job_ids):
    """A job whose worker (on another host) stopped renewing: every racer sees the lease
    expired, one takes it and the attempt is counted once."""
    with session_scope(ctx.engine) as session:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids))
            .values(status=JobStatus.running, lease_owner="gone-host:1", lease_expires_at=time.time() - 5, attempts=1)
        )
    for job_id in job_ids:
        winners = _race_processes(ctx.settings.db_url, job_id)
        assert len(winners) == 1, f"job {job_id}: {len(winners)} of {RACERS} racers won ({winners})"
        job = _stored_job(ctx, job_id)
        assert (job.lease_owner, job.attempts) == (winners[0], 2)
        assert job.lease_expires_at > time.time()


def test_threads_racing_for_a_job_and_the_reaper_agree(ctx, job_ids):
    """Threads of one process (one engine, one pool) race to claim; then the reaper and a
    renewing owner race on an expired lease: the job ends in exactly one state."""
    for job_id in job_ids:
        barrier = threading.Barrier(RACERS)

        def claim(i: int, job_id=job_id, barrier=barrier):
            barrier.wait(timeout=60)
            return lifecycle.claim_job(ctx.engine, job_id, f"thread-{i}:0", 60)

        with ThreadPoolExecutor(RACERS) as pool:
            won = [job for job in pool.map(claim, range(RACERS)) if job is not None]
        assert len(won) == 1 and _stored_job(ctx, job_id).lease_owner == won[0].lease_owner

    job_id, owner = job_ids[0], _stored_job(ctx, job_ids[0]).lease_owner
    with session_scope(ctx.engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=time.time() - 1))
    with ThreadPoolExecutor(2) as pool:
        reaped = pool.submit(lifecycle.reap_expired, ctx.engine)
        renewed = pool.submit(lifecycle.renew_lease, ctx.engine, job_id, owner, 60)
        requeued, renewed = reaped.result()[0], renewed.result()
    job = _stored_job(ctx, job_id)
    if renewed:  # the renewal came first: the reaper saw a live lease and left it
        assert job_id not in requeued and (job.status, job.lease_owner) == (JobStatus.running, owner)
    else:
        assert job_id in requeued and (job.status, job.lease_owner) == (JobStatus.queued, None)


def _events(job_id: int, steps: range) -> list[Event]:
    out: list[Event] = []
    for step in steps:
        out.append(Event(job_id=job_id, kind=EventKind.train_metrics, step=step, data={"loss": 1.0 / step}))
        out.append(Event(job_id=job_id, kind=EventKind.log, step=step, data={"key": f"line-{step}", "message": f"step {step}"}))
        if step % 5 == 0:
            out.append(Event(job_id=job_id, kind=EventKind.eval_metrics, step=step, data={"loss": 2.0 / step}))
            out.append(Event(job_id=job_id, kind=EventKind.sample, step=step,
                             data={"probe_index": 0, "prompt": "p", "output": f"o{step}"}))
            out.append(Event(job_id=job_id, kind=EventKind.checkpoint, step=step,
                             data={"path": f"jobs/{job_id}/checkpoint-{step}"}))
    return out


def _counts(ctx, job_id: int) -> dict[str, int]:
    with session_scope(ctx.engine) as session:
        return {
            table.__name__: session.exec(select(func.count()).select_from(table).where(table.job_id == job_id)).one()
            for table in (MetricPoint, Sample, Checkpoint, JobLog)
        }


def _store(url: str, events_json: list[str], barrier) -> None:
    barrier.wait(timeout=60)
    store_events(engine_for(url), [Event.model_validate_json(e) for e in events_json])


def test_replayed_events_are_stored_once_even_when_ingested_at_once(ctx, job_ids):
    """The studio's ingester replays what it may have stored before a restart, and two
    ingesters can briefly overlap: every row is stored exactly once, the first value wins."""
    job_id = job_ids[0]
    first = _events(job_id, range(1, 31))
    store_events(ctx.engine, first)
    expected = {"MetricPoint": 36, "Sample": 6, "Checkpoint": 6, "JobLog": 30}
    assert _counts(ctx, job_id) == expected

    store_events(ctx.engine, first)  # a plain replay
    replay = _events(job_id, range(21, 41))  # overlaps steps 21-30, adds 31-40
    for event in replay:
        if event.kind == EventKind.train_metrics:
            event.data["loss"] = -1.0  # a replayed row must not overwrite the stored one
    barrier = _fork.Barrier(RACERS)
    batch = [e.model_dump_json() for e in replay]
    racers = [_fork.Process(target=_store, args=(ctx.settings.db_url, batch, barrier)) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0
    assert _counts(ctx, job_id) == {"MetricPoint": 48, "Sample": 8, "Checkpoint": 8, "JobLog": 40}
    with session_scope(ctx.engine) as session:
        losses = dict(session.exec(
            select(MetricPoint.step, MetricPoint.loss).where(MetricPoint.job_id == job_id, MetricPoint.split == "train")
        ).all())
    assert losses[25] == pytest.approx(1 / 25) and losses[35] == -1.0


def test_a_forked_child_opens_its_own_connections(settings):
    """A Celery pool child inherits the parent's engine; it must open connections of its
    own (on PostgreSQL two processes on one socket corrupt each other's replies)."""
    engine = engine_for(settings.db_url)
    with engine.connect() as conn:
        parent_backend = _backend_id(conn)
    results = _fork.Queue()

    def child():
        with engine.connect() as conn:
            results.put(_backend_id(conn))

    proc = _fork.Process(target=child)
    proc.start()
    child_backend = results.get(timeout=30)
    proc.join(30)
    assert proc.exitcode == 0
    with engine.connect() as conn:  # and the parent's pooled connection still answers
        assert _backend_id(conn) == parent_backend
    if databases.BACKEND == "postgres":
        assert child_backend != parent_backend


def _backend_id(conn) -> int:
    if conn.dialect.name == "postgresql":
        return conn.execute(text("SELECT pg_backend_pid()")).scalar()
    return conn.execute(text("SELECT 1")).scalar()


def test_postgres_urls_use_psycopg_3():
    assert with_driver("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert with_driver("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert with_driver("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"
    engine = make_engine("postgresql://u@127.0.0.1:1/db")  # no connection until used
    assert engine.dialect.driver == "psycopg" and engine.pool.size() == PG_POOL_SIZE


@pytest.mark.skipif(databases.BACKEND != "postgres", reason="PostgreSQL only")
def test_a_private_postgres_cluster_starts_and_is_removed():
    """Where nothing answers at 127.0.0.1:5432 the tests start their own cluster."""
    try:
        databases._bin_dir()
    except databases.Missing as exc:
        pytest.skip(str(exc))
    private, stop = databases._start_private()
    try:
        with private.admin() as conn:
            assert conn.execute("SELECT current_setting('fsync')").fetchone()[0] == "off"
    finally:
        stop()
    with pytest.raises(Exception):
        private.admin()
