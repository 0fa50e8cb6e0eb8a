"""studio.leases on a real DB: the claim, renewal, cancel flag and reaper that jobs,
evaluation runs and exports share; exports have no cancel flag."""

from __future__ import annotations

import json

import pytest

from studio.db import session_scope
from studio.leases import EVALS, EXPORTS, REQUEUED_STAGE, Cancelled, Lease
from studio.models import Export, ExportStatus, Job
from studio.services import datasets, evals, exports
from tests.conftest import wait_until

pytestmark = pytest.mark.db


def _export(ctx) -> int:
    """An export row of a job row, as create_export would store them (no worker needed)."""
    body = "\n".join(json.dumps({"instruction": f"Say {i}", "output": f"{i}"}) for i in range(4)).encode()
    version_id = datasets.create_dataset(ctx, "t.jsonl", body)[0].version_id
    with session_scope(ctx.engine) as session:
        job = Job(dataset_version_id=version_id, base_model="demo", config_json="{}")
        session.add(job)
        session.flush()
        export = Export(job_id=job.id, kind="merged", max_attempts=3)
        session.add(export)
        session.flush()
        return export.id


def test_an_expired_export_is_requeued_then_failed_out_of_attempts(ctx):
    export_id = _export(ctx)
    for attempt in range(1, 4):
        claimed = EXPORTS.claim(ctx.engine, export_id, f"w{attempt}@test", lease_seconds=-1)  # over at once
        assert claimed is not None and claimed.attempts == attempt and claimed.status == ExportStatus.running
        exports.reap(ctx)
        state = exports.get_export(ctx, export_id)
        if attempt < 3:
            assert state.status == "queued" and state.stage == REQUEUED_STAGE
    assert state.status == "failed" and "died 3 times" in state.error
    assert EXPORTS.claim(ctx.engine, export_id, "w4@test", 60) is None


def test_a_live_lease_is_not_taken_and_only_its_owner_changes_the_row(ctx):
    export_id = _export(ctx)
    assert EXPORTS.claim(ctx.engine, export_id, "w1@test", 60) is not None
    assert EXPORTS.claim(ctx.engine, export_id, "w2@test", 60) is None
    assert not EXPORTS.update_ours(ctx.engine, export_id, "w2@test", stage="not mine")
    assert EXPORTS.update_ours(ctx.engine, export_id, "w1@test", stage="mine")
    assert exports.get_export(ctx, export_id).stage == "mine"
    assert EXPORTS.reap(ctx.engine, lambda row: "unused") == ([], [])  # its lease has not expired


def test_the_lease_renews_and_notices_when_another_attempt_owns_the_row(ctx):
    export_id = _export(ctx)
    EXPORTS.claim(ctx.engine, export_id, "w1@test", 0.3)

    def expires_at() -> float:
        with session_scope(ctx.engine) as session:
            return session.get(Export, export_id).lease_expires_at

    first = expires_at()
    with Lease(EXPORTS, ctx.engine, export_id, "w1@test", 0.3) as lease:
        wait_until(lambda: expires_at() > first, 10, interval=0.05, what="the lease to be renewed")
        lease.check()  # no cancel flag to read: still ours, so nothing is raised
        with session_scope(ctx.engine) as session:
            session.get(Export, export_id).lease_owner = "w2@test"
        wait_until(lambda: lease.lost, 10, interval=0.05, what="the lease to notice it is lost")
        with pytest.raises(Cancelled):
            lease.check()
    assert not lease.cancelled.is_set()


def test_an_evaluations_lease_reads_its_cancel_flag(ctx):
    run = evals.create_eval(ctx, evals.EvalRequest(models=["demo"], prompts=["Say hi."]))
    assert EVALS.claim(ctx.engine, run.id, "w1@test", 60) is not None
    with Lease(EVALS, ctx.engine, run.id, "w1@test", 60) as lease:
        lease.check()
        evals.cancel_eval(ctx, run.id)  # running: only the flag is set
        with pytest.raises(Cancelled):
            lease.check()
    assert lease.cancelled.is_set() and not lease.lost


def test_jobs_use_the_same_claim_and_reaper(ctx):
    """Through lifecycle, which adds what only jobs do (studio.leases.JOBS underneath)."""
    from studio import lifecycle

    body = json.dumps({"instruction": "Say 1", "output": "1"}).encode()
    version_id = datasets.create_dataset(ctx, "t.jsonl", body)[0].version_id
    with session_scope(ctx.engine) as session:
        job = Job(dataset_version_id=version_id, base_model="demo", config_json="{}", max_attempts=1)
        session.add(job)
        session.flush()
        job_id = job.id
    assert lifecycle.claim_job(ctx.engine, job_id, "w1@test", -1).attempts == 1
    assert lifecycle.claim_job(ctx.engine, job_id, "w2@test", 60) is None  # out of attempts
    assert lifecycle.reap_expired(ctx.engine) == ([], [job_id])
    with session_scope(ctx.engine) as session:
        assert "died or stopped responding 1 times" in session.get(Job, job_id).error
