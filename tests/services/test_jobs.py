"""The Train tab's pre-launch preview, through the jobs service on a real SQLite DB and
the real base model configs (the shipped demo base and a tiny local Llama)."""

from __future__ import annotations

import json
import math
import time

import pytest

from studio import workers
from studio.core.config import ConfigError
from studio.core.estimate import GIB, Device
from studio.db import session_scope
from studio.models import WorkerNode, utcnow
from studio.services import datasets, jobs
from studio.services.context import NotFound

pytestmark = pytest.mark.db  # jobs and workers stored and read back: also run on PostgreSQL


def upload(ctx, n: int) -> int:
    body = "\n".join(json.dumps({"instruction": f"Say {i}", "output": f"{i}"}) for i in range(n)).encode()
    return datasets.create_dataset(ctx, "t.jsonl", body)[0].id


def test_preview_sizes_the_run_like_the_trainer(ctx):
    dataset_id = upload(ctx, 100)
    config = {
        "data": {"validation_fraction": 0.1},
        "training": {"batch_size": 8, "grad_accum": 2, "epochs": 3, "packing": False},
    }
    preview = jobs.preview_launch(ctx, dataset_id, "demo", config)
    assert preview.train_rows == 90
    assert preview.steps == 3 * 6  # ceil(90 / 16) per epoch
    two = jobs.preview_launch(ctx, dataset_id, "demo", {**config, "training": {**config["training"], "devices": 2}})
    assert two.steps == 3 * 3  # ceil(90 / 32): each device takes its own batch
    capped = jobs.preview_launch(ctx, dataset_id, "demo", {**config, "training": {"max_steps": 7}})
    assert capped.steps == 7
    plan = preview.plan
    assert 0 < plan.trainable_params < plan.total_params
    assert plan.memory_bytes > 0 and plan.precision == "fp32"
    assert jobs.list_jobs(ctx) == []  # a preview stores nothing


def test_packed_preview_counts_sequences_of_max_length(ctx):
    """Packed, the Trainer steps over sequences of max_length tokens, tokens_per_step of
    them a step: the preview counts those, and the tokens they hold."""
    dataset_id = upload(ctx, 100)
    report = datasets.quality_report(ctx, dataset_id, "demo", max_length=64)
    mean = report["tokens"]["mean"]
    training = {"max_length": 64, "tokens_per_step": 128, "epochs": 2, "packing": True}
    preview = jobs.preview_launch(ctx, dataset_id, "demo", {"training": training})
    sequences = math.ceil(90 * mean / 64)
    assert preview.steps == 2 * math.ceil(sequences / 2)  # two sequences of 64 tokens a step
    assert preview.train_tokens == pytest.approx(preview.steps * 128)
    doubled = jobs.preview_launch(ctx, dataset_id, "demo", {"training": {**training, "tokens_per_step": 256}})
    assert doubled.steps == 2 * math.ceil(sequences / 4)


def test_preview_uses_a_stored_split(ctx):
    dataset_id = upload(ctx, 50)
    datasets.split_dataset(ctx, dataset_id, validation_fraction=0.2, seed=1)
    preview = jobs.preview_launch(ctx, dataset_id, "demo", {"training": {"batch_size": 10, "epochs": 1, "packing": False}})
    assert preview.train_rows == 40 and preview.steps == 4


def test_preview_counts_follow_the_method(ctx, tiny_model_dir):
    dataset_id = upload(ctx, 20)
    lora = jobs.preview_launch(ctx, dataset_id, str(tiny_model_dir), {"adapter": {"method": "lora", "r": 4}})
    wider = jobs.preview_launch(ctx, dataset_id, str(tiny_model_dir), {"adapter": {"method": "lora", "r": 8}})
    full = jobs.preview_launch(ctx, dataset_id, str(tiny_model_dir), {"adapter": {"method": "full"}})
    assert wider.plan.trainable_params == 2 * lora.plan.trainable_params
    assert full.plan.trainable_params == full.plan.total_params
    qlora = jobs.preview_launch(ctx, dataset_id, str(tiny_model_dir), {"adapter": {"method": "qlora"}})
    assert any("needs a CUDA GPU" in w for w in qlora.plan.warnings)


def test_preview_names_bad_fields_and_missing_things(ctx, tmp_path):
    dataset_id = upload(ctx, 10)
    with pytest.raises(ConfigError) as err:
        jobs.preview_launch(ctx, dataset_id, "demo", {"training": {"learning_rate": -1, "batch_size": 0}})
    assert any("training.learning_rate" in e for e in err.value.errors)
    assert any("training.batch_size" in e for e in err.value.errors)
    with pytest.raises(ConfigError, match="base_model"):
        jobs.preview_launch(ctx, dataset_id, str(tmp_path / "nowhere"))
    with pytest.raises(NotFound):
        jobs.preview_launch(ctx, 999, "demo")


# --- the worker registry: the preview is for the workers' device ------------------------

A100 = Device(cuda=True, name="NVIDIA A100", memory_bytes=80 * GIB, bf16=True, bitsandbytes=True, gpus=1)
SMALL_CPU = Device(cuda=False, name="CPU", memory_bytes=8 * GIB, bf16=False, bitsandbytes=True)


def test_preview_without_a_worker_says_a_job_would_wait(ctx):
    preview = jobs.preview_launch(ctx, upload(ctx, 10), "demo")
    assert preview.runs_on == "no worker yet"
    assert preview.plan.warnings[0].startswith("No worker has reported in the last 90 s")


def test_preview_is_for_the_registered_workers_device(ctx, tiny_model_dir):
    dataset_id = upload(ctx, 20)
    workers.register(ctx.engine, "gpu@box", A100, utcnow())
    qlora = {"adapter": {"method": "qlora"}, "training": {"precision": "auto"}}
    on_gpu = jobs.preview_launch(ctx, dataset_id, str(tiny_model_dir), qlora)
    assert on_gpu.runs_on == "gpu@box (NVIDIA A100, 80 GiB)"
    assert on_gpu.plan.precision == "bf16" and on_gpu.plan.warnings == []
    # a job goes to whichever worker is free: a CPU worker's own problems are named too
    workers.register(ctx.engine, "cpu@laptop", SMALL_CPU, utcnow())
    mixed = jobs.preview_launch(ctx, dataset_id, str(tiny_model_dir), qlora)
    assert mixed.plan.precision == "bf16"
    assert any(w.startswith("On CPU, 8 GiB RAM: QLoRA needs a CUDA GPU") for w in mixed.plan.warnings)
    assert "cpu@laptop (CPU, 8 GiB RAM)" in mixed.runs_on and "gpu@box" in mixed.runs_on


def test_silent_workers_are_not_counted(ctx):
    workers.register(ctx.engine, "gone@box", A100, utcnow())
    silence = ctx.settings.worker_heartbeat_seconds * workers.MISSED_BEATS
    with session_scope(ctx.engine) as session:
        session.get(WorkerNode, "gone@box").last_seen = time.time() - silence - 1
    assert workers.live_devices(ctx.engine, ctx.settings.worker_heartbeat_seconds) == {}
    [listed] = jobs.list_workers(ctx)
    assert listed.name == "gone@box" and not listed.alive and listed.seconds_since_seen > silence
    assert jobs.preview_launch(ctx, upload(ctx, 5), "demo").runs_on == "no worker yet"
    workers.register(ctx.engine, "gone@box", A100, utcnow())  # it reports again
    assert jobs.list_workers(ctx)[0].alive
    workers.unregister(ctx.engine, "gone@box")
    assert jobs.list_workers(ctx) == []
