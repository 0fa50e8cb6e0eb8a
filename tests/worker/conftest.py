"""Run a job's worker task in this process (no broker, no subprocess): the same
claim -> recipe -> finish path a Celery worker takes, fast enough for many variants."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pytest

from studio.services import jobs
from tests.conftest import upload_file


@pytest.fixture
def run_here(ctx, tiny_model_dir, alpaca_file, monkeypatch) -> Callable[..., Any]:
    """run_here(config) creates a job on the tiny model, runs it to the end here and
    returns the finished job."""
    from worker import tasks

    monkeypatch.setattr(tasks, "get_settings", lambda: ctx.settings)
    dataset_id = upload_file(ctx, alpaca_file)

    def run(config: Mapping[str, Any]):
        job = jobs.create_job(ctx, dataset_id, str(tiny_model_dir), config)
        tasks.run_job(job.id)
        return jobs.get_job(ctx, job.id)

    return run
