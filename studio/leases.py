"""Leases on the rows that workers run: jobs, evaluation runs and exports.

A worker takes a row with one conditional UPDATE (queued, or running with its lease
expired; attempts left; not cancelled where the table has a cancel flag), changes it only
while it still holds the lease (`update_ours`), renews the lease from a thread (`Lease`),
and the studio's reaper requeues rows whose lease expired, or fails those out of
attempts (`reap`). Each step is one conditional UPDATE, so two workers (or a worker and
the reaper) never both win.

What only jobs do on top (a dead local owner's lease is void at once, a cancelled queued
job settles as cancelled) stays in studio.lifecycle.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sqlalchemy import and_, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import select

from studio.db import session_scope
from studio.models import EvalRun, Export, ExportStatus, Job, JobStatus, utcnow

log = logging.getLogger(__name__)

REQUEUED_STAGE = "requeued: its worker stopped"  # what a requeued run or export shows (jobs have no stage)


class Cancelled(Exception):
    """A person asked to stop, or another attempt owns the row now."""


@dataclass(frozen=True)
class Leased:
    """A table whose rows workers claim. Its model has the columns status, attempts,
    max_attempts, lease_owner, lease_expires_at, started_at, finished_at and error (and
    cancel_requested when `cancellable`); its status enum has queued, running, failed."""

    model: type
    status: type[enum.Enum]
    cancellable: bool

    def try_claim(self, session, row_id: int, owner: str, lease_seconds: float) -> bool:
        """The claim's conditional UPDATE in the caller's session; True when it won."""
        m, now = self.model, time.time()
        claimable = [
            m.id == row_id,
            m.attempts < m.max_attempts,
            or_(m.status == self.status.queued, and_(m.status == self.status.running, m.lease_expires_at < now)),
        ]
        if self.cancellable:
            claimable.append(m.cancel_requested == False)  # noqa: E712
        result = session.execute(
            update(m).where(*claimable).values(
                status=self.status.running, lease_owner=owner, lease_expires_at=now + lease_seconds,
                attempts=m.attempts + 1, started_at=utcnow(), error=None,
            )
        )
        return result.rowcount == 1

    def claim(self, engine: Engine, row_id: int, owner: str, lease_seconds: float) -> Optional[Any]:
        """Take a queued row (or one whose worker's lease expired) for `owner`; None when
        it is finished, cancelled, out of attempts or held by a live worker."""
        with session_scope(engine) as session:
            if not self.try_claim(session, row_id, owner, lease_seconds):
                return None
            return session.get(self.model, row_id)

    def update_ours(self, engine: Engine, row_id: int, owner: str, **values) -> bool:
        """Change the row while `owner` holds it running; False when it is no longer ours."""
        m = self.model
        with session_scope(engine) as session:
            result = session.execute(
                update(m).where(m.id == row_id, m.lease_owner == owner, m.status == self.status.running).values(**values)
            )
            return result.rowcount == 1

    def reap(self, engine: Engine, failure: Callable[[Any], str], **requeued: Any) -> tuple[list[int], list[int]]:
        """Requeue running rows whose worker stopped renewing its lease (setting `requeued`
        besides the status); fail those out of attempts with `failure(row)` as the error.
        Returns (requeued ids, failed ids); the caller re-sends the requeued ones."""
        m, now = self.model, time.time()
        requeued_ids, failed_ids = [], []
        with session_scope(engine) as session:
            expired = session.exec(select(m).where(m.status == self.status.running, m.lease_expires_at < now)).all()
            for row in expired:
                out_of_attempts = row.attempts >= row.max_attempts
                values = (
                    dict(status=self.status.failed, finished_at=utcnow(), error=failure(row))
                    if out_of_attempts
                    else dict(status=self.status.queued, **requeued)
                )
                result = session.execute(
                    update(m)
                    .where(m.id == row.id, m.status == self.status.running, m.lease_expires_at < now)
                    .values(lease_owner=None, lease_expires_at=None, **values)
                )
                if result.rowcount == 1:
                    (failed_ids if out_of_attempts else requeued_ids).append(row.id)
        return requeued_ids, failed_ids


JOBS = Leased(Job, JobStatus, cancellable=True)
EVALS = Leased(EvalRun, JobStatus, cancellable=True)
EXPORTS = Leased(Export, ExportStatus, cancellable=False)


class Lease:
    """Renews a claimed row's lease every third of it while the work runs; `check()`
    reads the row's cancel flag (where its table has one) and whether it is still ours."""

    def __init__(self, table: Leased, engine: Engine, row_id: int, owner: str, seconds: float):
        self.table, self.engine, self.row_id, self.owner, self.seconds = table, engine, row_id, owner, seconds
        self.lost = False
        self.cancelled = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{table.model.__tablename__}-lease", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def check(self) -> None:
        """Raise Cancelled when a person asked to stop (or another attempt owns the row)."""
        with session_scope(self.engine) as session:
            row = session.get(self.table.model, self.row_id)
            if self.table.cancellable and row.cancel_requested:
                self.cancelled.set()
            if row.lease_owner != self.owner or row.status != self.table.status.running:
                self.lost = True
        if self.cancelled.is_set() or self.lost:
            raise Cancelled()

    def _loop(self) -> None:
        while not self._done.wait(self.seconds / 3):
            try:
                if not self.table.update_ours(self.engine, self.row_id, self.owner,
                                              lease_expires_at=time.time() + self.seconds):
                    self.lost = True
            except Exception:  # a transient DB error: keep trying
                log.exception("%s %s: lease renewal failed; retrying", self.table.model.__tablename__, self.row_id)
