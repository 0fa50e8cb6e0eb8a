"""Helpers the REST end-to-end tests share: a tiny job trained through a real `studio
serve` and a real worker, and waiting for anything with a status to finish."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Processes, wait_until

# 12 steps on the tiny model, checkpoints at 6 and 12 besides the final result.
QUICK = {
    "training": {"max_steps": 12, "batch_size": 8, "sample_every": 6, "save_every": 6, "keep_last": 2,
                 "max_length": 128, "max_new_tokens": 8},
    "data": {"probe_count": 2, "exact_match_rows": 4},
    "template": {"name": "chatml", "system_prompt": "Answer briefly."},
}
FINISHED = ("succeeded", "failed", "cancelled")


def wait_finished(client: httpx.Client, path: str, processes: Processes, timeout: float,
                  finished: tuple[str, ...] = FINISHED) -> dict:
    """GET path until its status is one of `finished`; fails with the processes' logs."""

    def done():
        state = client.get(path).json()
        return state if state["status"] in finished else None

    try:
        return wait_until(done, timeout, interval=0.5, what=f"{path} to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{processes.logs()}") from None


def train_over_rest(client: httpx.Client, dataset_file: Path, base_model: str, processes: Processes,
                    timeout: float = 300) -> tuple[int, int]:
    """Upload dataset_file and train a QUICK job on base_model over REST; (dataset id,
    job id) once the job has succeeded."""
    dataset = client.post("/api/datasets", files={"file": (dataset_file.name, dataset_file.read_bytes())}).json()
    job = client.post("/api/jobs", json={"dataset_id": dataset["id"], "base_model": base_model, "config": QUICK})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    state = wait_finished(client, f"/api/jobs/{job_id}", processes, timeout)
    assert state["status"] == "succeeded", state["error"]
    return dataset["id"], job_id
