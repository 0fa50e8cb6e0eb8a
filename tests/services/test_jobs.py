"""The Train tab's pre-launch preview, through the jobs service on a real SQLite DB and
the real base model configs (the shipped demo base and a tiny local Llama)."""

from __future__ import annotations

import json

import pytest

from studio.core.config import ConfigError
from studio.services import datasets, jobs
from studio.services.context import NotFound


def upload(ctx, n: int) -> int:
    body = "\n".join(json.dumps({"instruction": f"Say {i}", "output": f"{i}"}) for i in range(n)).encode()
    return datasets.create_dataset(ctx, "t.jsonl", body)[0].id


def test_preview_sizes_the_run_like_the_trainer(ctx):
    dataset_id = upload(ctx, 100)
    config = {"data": {"validation_fraction": 0.1}, "training": {"batch_size": 8, "grad_accum": 2, "epochs": 3}}
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


def test_preview_uses_a_stored_split(ctx):
    dataset_id = upload(ctx, 50)
    datasets.split_dataset(ctx, dataset_id, validation_fraction=0.2, seed=1)
    preview = jobs.preview_launch(ctx, dataset_id, "demo", {"training": {"batch_size": 10, "epochs": 1}})
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
