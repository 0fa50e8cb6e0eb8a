"""Helpers the chat tests share: a job trained here (the real worker task, in this
process), and a real `studio infer` next to a real `studio serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import httpx
import pytest

from studio.services import jobs
from studio.services.context import StudioContext
from studio.settings import Settings
from tests.conftest import Processes, free_port, server_starter, studio_env, upload_file, wait_until

# 12 steps on the tiny model, checkpoints at 6 and 12 besides the final result.
QUICK_JOB = {
    "training": {"max_steps": 12, "batch_size": 8, "sample_every": 6, "save_every": 6, "keep_last": 2,
                 "max_length": 128, "max_new_tokens": 8, "learning_rate": 3e-3},
    "data": {"probe_count": 2, "exact_match_rows": 4},
}


def train_here(ctx: StudioContext, dataset_file: Path, base_model: str, config: Mapping[str, Any] = QUICK_JOB) -> int:
    """Create a job and run the worker's task for it in this process; returns its id."""
    from worker import tasks

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks, "get_settings", lambda: ctx.settings)
        job = jobs.create_job(ctx, upload_file(ctx, dataset_file), base_model, config)
        tasks.run_job(job.id)
    finished = jobs.get_job(ctx, job.id)
    assert finished.status.value == "succeeded", finished.error
    return job.id


def start_infer(processes: Processes, settings: Settings, **env: str) -> str:
    """`studio infer` on a free port for these settings; its URL once /health answers."""
    port = free_port()
    proc = processes.start(["infer", "--port", str(port)], {**studio_env(settings), **env}, "infer")
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"studio infer exited early:\n{processes.logs()}")
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 90, interval=0.25, what="studio infer to answer /health")
    return url


def start_studio(processes: Processes, settings: Settings, **infer_env: str) -> tuple[str, str, Settings]:
    """A model host and a web app that talks to it: (web URL, host URL, the settings)."""
    infer_url = start_infer(processes, settings, **infer_env)
    settings = settings.model_copy(update={"infer_url": infer_url})
    return server_starter(processes)(settings), infer_url, settings
