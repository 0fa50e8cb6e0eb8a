"""A job's state machine in the DB: queued -> running -> succeeded / failed / cancelled.

Every transition is one conditional UPDATE, so two workers (or a worker and the reaper)
can never both win. The worker side (claim, renew, finish) and the studio side (cancel,
reap) share these functions. The claim's UPDATE, renewal and the reaper are
studio.leases', shared with evaluation runs and exports; what only jobs have stays here:
a redelivered job whose owner's process on this host is gone takes over at once (without
waiting out the lease), and the few ways a job ends while nobody holds it.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Optional

import psutil

from sqlalchemy import update
from sqlalchemy.engine import Engine

from studio.db import session_scope
from studio.leases import JOBS
from studio.models import Job, JobStatus, utcnow


def claim_job(engine: Engine, job_id: int, owner: str, lease_seconds: float) -> Optional[Job]:
    """Take a job for `owner` if it is queued, or running with an expired lease.

    Returns the claimed job, or None when another live worker has it, it is finished,
    cancelled, or out of attempts (a redelivered task then simply exits).
    """
    with session_scope(engine) as session:
        claimed = JOBS.try_claim(session, job_id, owner, lease_seconds)
        if not claimed and not _take_over_dead_local_owner(session, job_id, owner, lease_seconds):
            _settle_unclaimable(session, job_id)
            return None
        return session.get(Job, job_id)


def owner_id() -> str:
    """This process as a lease owner: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_local_owner(owner: str | None) -> bool:
    """The owner ran on this host and its process is gone (e.g. the pool child was
    killed): its lease is void without waiting for it to expire."""
    if not owner or ":" not in owner:
        return False
    host, pid = owner.rsplit(":", 1)
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


def _take_over_dead_local_owner(session, job_id: int, owner: str, lease_seconds: float) -> bool:
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.running or not _dead_local_owner(job.lease_owner):
        return False
    if job.cancel_requested or job.attempts >= job.max_attempts:
        ending = (
            dict(status=JobStatus.cancelled, error=None)
            if job.cancel_requested
            else dict(status=JobStatus.failed, error=_crashed_reason(job.attempts, job.max_attempts))
        )
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running, Job.lease_owner == job.lease_owner)
            .values(lease_owner=None, lease_expires_at=None, finished_at=utcnow(), **ending)
        )
        return False
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running, Job.lease_owner == job.lease_owner)
        .values(lease_owner=owner, lease_expires_at=time.time() + lease_seconds, attempts=Job.attempts + 1)
    )
    session.expire_all()
    return result.rowcount == 1


def _settle_unclaimable(session, job_id: int) -> None:
    """A queued job that was cancelled before it started ends as cancelled."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued, Job.cancel_requested == True)  # noqa: E712
        .values(status=JobStatus.cancelled, finished_at=utcnow())
    )


def renew_lease(engine: Engine, job_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend the lease; False means the job is no longer ours (reaped or finished)."""
    return JOBS.update_ours(engine, job_id, owner, lease_expires_at=time.time() + lease_seconds)


def finish_job(
    engine: Engine, job_id: int, owner: str, status: JobStatus, error: Optional[str] = None
) -> bool:
    """Move our running job to a final status."""
    assert status.finished
    return JOBS.update_ours(
        engine, job_id, owner, status=status, error=error, finished_at=utcnow(), lease_expires_at=None
    )


def set_progress(engine: Engine, job_id: int, owner: str, step: int, total_steps: int) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(step=step, total_steps=total_steps)
        )


def cancel_requested(engine: Engine, job_id: int) -> bool:
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        return job is None or job.cancel_requested


def request_cancel(engine: Engine, job_id: int) -> Optional[JobStatus]:
    """Flag a job for cancellation. A queued job is cancelled at once; a running one
    stops at its next step. Returns the job's status after the request."""
    with session_scope(engine) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_([JobStatus.queued, JobStatus.running]))
            .values(cancel_requested=True)
        )
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.queued)
            .values(status=JobStatus.cancelled, finished_at=utcnow())
        )
        job = session.get(Job, job_id)
        return job.status if job else None


def _crashed_reason(attempts: int, max_attempts: int) -> str:
    return (
        f"The worker running this job died or stopped responding {attempts} times (attempt limit "
        f"{max_attempts}). This is often memory: lower the batch size or max length, then clone the job."
    )


def reap_expired(engine: Engine) -> tuple[list[int], list[int]]:
    """Requeue running jobs whose worker stopped renewing its lease; fail those out of
    attempts. Returns (requeued ids, failed ids); the caller re-sends the requeued ones."""
    return JOBS.reap(engine, lambda job: _crashed_reason(job.attempts, job.max_attempts))
