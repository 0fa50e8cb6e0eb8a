"""Edges of resuming that a kill at an unlucky moment hits: the steps before a checkpoint
must be stored before it counts, and a checkpoint at the very last step must finish the
job without training past the end."""

from __future__ import annotations

import shutil
import time

from studio.core.events import Event, EventKind
from studio.eventbus import DbSink
from studio.models import JobStatus
from studio.services import jobs
from worker.callbacks import EventWriter
from worker.checkpoints import is_last_step

RUN = {
    "training": {"max_steps": 8, "batch_size": 4, "save_every": 4, "sample_every": 4, "max_length": 64,
                 "max_new_tokens": 4},
    "data": {"probe_count": 1, "exact_match_rows": 2},
}


def test_drain_stores_every_event_put_so_far_at_once(ctx):
    job = jobs.create_job(ctx, _upload(ctx), "demo", {"training": {"max_steps": 1}})
    writer = EventWriter(DbSink(ctx.engine), interval=60)  # the timer alone would wait a minute
    for step in range(1, 6):
        writer.put(Event(job_id=job.id, kind=EventKind.train_metrics, step=step, data={"loss": 1.0 / step}))
    started = time.monotonic()
    assert writer.drain(timeout=10)
    assert time.monotonic() - started < 2
    assert [m.step for m in jobs.job_metrics(ctx, job.id)] == [1, 2, 3, 4, 5]
    writer.close()


def test_a_checkpoint_at_the_last_step_finishes_without_another_step(run_here, ctx):
    from safetensors.torch import load_file

    first = run_here(RUN)
    assert first.status == JobStatus.succeeded, first.error
    # A second job whose first attempt "died" right after saving its last checkpoint.
    source = ctx.settings.artifacts_root / "jobs" / str(first.id) / "checkpoints" / "checkpoint-8"
    assert is_last_step(source)
    second = jobs.create_job(ctx, _upload(ctx), first.base_model, RUN)
    target = ctx.settings.artifacts_root / "jobs" / str(second.id) / "checkpoints" / "checkpoint-8"
    shutil.copytree(source, target)
    from worker import tasks

    assert tasks.run_job(second.id) == "succeeded"
    assert [m.step for m in jobs.job_metrics(ctx, second.id) if m.split == "train"] == []  # nothing trained
    assert [m.step for m in jobs.job_metrics(ctx, second.id) if m.split == "eval"] == [8]  # the final eval
    assert jobs.get_job(ctx, second.id).step == 8
    final = ctx.settings.artifacts_root / "jobs" / str(second.id) / "final" / "adapter_model.safetensors"
    saved = load_file(target / "adapter_model.safetensors")
    result = load_file(final)
    assert saved.keys() == result.keys() and all((saved[k] == result[k]).all() for k in saved)


def _upload(ctx) -> int:
    import json

    from studio.services import datasets

    body = "\n".join(json.dumps({"instruction": f"Say {i}", "output": f"{i}"}) for i in range(40)).encode()
    return datasets.create_dataset(ctx, "t.jsonl", body)[0].id
