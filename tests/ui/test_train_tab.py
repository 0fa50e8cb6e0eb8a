"""The Train tab's pre-launch preview handler, on the real services and a real SQLite DB."""

from __future__ import annotations

import json

import gradio as gr

from studio import workers
from studio.core.config import DEMO_PRESET, build_config
from studio.core.estimate import GIB, Device
from studio.models import utcnow
from studio.services import datasets
from studio.ui.forms import render_form
from studio.ui.train_tab import show_plan


def demo_form(ctx):
    """A 40-row dataset and the Train form filled from the demo preset: (dataset id, form, values)."""
    body = "\n".join(json.dumps({"instruction": f"Say {i}", "output": f"{i}"}) for i in range(40)).encode()
    dataset_id = datasets.create_dataset(ctx, "t.jsonl", body)[0].id
    with gr.Blocks():
        form = render_form(build_config({}, preset=DEMO_PRESET))
    return dataset_id, form, form.values(build_config({}, preset=DEMO_PRESET))


def test_plan_shows_counts_steps_and_names_bad_fields(ctx):
    dataset_id, form, values = demo_form(ctx)
    text = show_plan(ctx, form, dataset_id, "demo", *values)
    assert "trainable of" in text and "GiB" in text
    assert "36 training rows, **24 steps**" in text  # 8 epochs x ceil(36 / 16)
    assert "- workers: no worker yet" in text and "No worker has reported" in text
    workers.register(ctx.engine, "trainer@box", Device(False, "CPU", 16 * GIB, False, False), utcnow())
    text = show_plan(ctx, form, dataset_id, "demo", *values)
    assert "- workers: trainer@box (CPU, 16 GiB RAM)" in text and "No worker" not in text

    by_path = {s.path: i for i, s in enumerate(form.specs)}
    values[by_path["adapter.method"]] = "qlora"
    assert "needs a CUDA GPU" in show_plan(ctx, form, dataset_id, "demo", *values)

    values[by_path["training.batch_size"]] = 0
    text = show_plan(ctx, form, dataset_id, "demo", *values)
    assert "cannot start a job" in text and "Batch size (training.batch_size)" in text
    assert show_plan(ctx, form, None, "demo", *values).startswith("Choose a dataset")


def test_plan_says_when_the_time_rests_on_the_workers_calibration(ctx):
    dataset_id, form, values = demo_form(ctx)
    workers.register(ctx.engine, "trainer@box", Device(False, "CPU", 16 * GIB, False, False, cpus=2), utcnow())
    assert "a rough estimate from the model size: no run" in show_plan(ctx, form, dataset_id, "demo", *values)
    slow = Device(False, "CPU", 16 * GIB, False, False, cpus=2, flops=1e9)
    workers.register(ctx.engine, "trainer@box", slow, utcnow())
    text = show_plan(ctx, form, dataset_id, "demo", *values)
    assert "the worker's speed in a short test run" in text
    workers.register(ctx.engine, "trainer@box", Device(False, "CPU", 16 * GIB, False, False, cpus=2, flops=4e9), utcnow())
    faster = show_plan(ctx, form, dataset_id, "demo", *values)
    assert faster != text  # four times the speed: a shorter range
