"""Failures read as plain reasons with what to try: a loss that stops being a number ends
the job at once, and the ways memory and disk run out are recognised."""

from __future__ import annotations

import errno
import math

import pytest
import torch

from studio.core.config import JobConfig, build_config
from studio.models import JobStatus
from studio.services import jobs
from tests.conftest import upload_file
from worker import tasks


def test_a_nan_loss_fails_the_job_at_once_with_what_to_try(ctx, tiny_model_dir, alpaca_file, tmp_path, monkeypatch):
    """A base checkpoint with a NaN weight (a broken download, an overflowed merge): the
    first loss is NaN. The Trainer would hide it (logging_nan_inf_filter) and train on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = tmp_path / "nan-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.norm.weight[0] = math.nan
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(broken)

    monkeypatch.setattr(tasks, "get_settings", lambda: ctx.settings)
    job = jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(broken), {"training": {"max_steps": 20}})
    tasks.run_job(job.id)
    done = jobs.get_job(ctx, job.id)
    assert done.status == JobStatus.failed and done.attempts == 1
    assert done.error.startswith("Training diverged: the loss became nan at step 1")
    assert "Lower training.learning_rate (now 0.0002)" in done.error
    assert not [m for m in jobs.job_metrics(ctx, job.id) if m.split == "train"]  # no NaN stored for the API


CONFIG = JobConfig.model_validate(build_config({}, preset=""))


def test_running_out_of_cpu_memory_is_named():
    with pytest.raises(RuntimeError) as cpu:  # torch's CPU allocator, for real
        torch.empty(1 << 50, dtype=torch.uint8)
    reason = tasks.explain_failure(cpu.value, CONFIG)
    assert reason.startswith("Out of memory")
    # packed (the default): a step is its token budget, so that is the knob, halved
    assert "Lower training.tokens_per_step (now 4096: batch_size 8 x max_length 512) to 2048" in reason
    assert "raise training.grad_accum to 2" in reason and "gradient_checkpointing" in reason
    assert tasks.explain_failure(MemoryError(), CONFIG).startswith("Out of memory")
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert tasks.explain_failure(oom, CONFIG).startswith("Out of memory")


@pytest.mark.parametrize(
    ("training", "advice"),
    [
        ({"tokens_per_step": 6144, "grad_accum": 2}, "Lower training.tokens_per_step (now 6144) to 3072 and raise training.grad_accum to 4"),
        ({"tokens_per_step": 1536}, "Lower training.tokens_per_step (now 1536) to 512, or"),
        ({"tokens_per_step": 512}, "Lower training.max_length (now 512) to 256 (longer rows are cut)"),
        ({"packing": False, "batch_size": 8}, "Lower training.batch_size (now 8) to 4 and raise training.grad_accum to 2"),
        ({"packing": False, "batch_size": 1, "gradient_checkpointing": True}, "Lower training.max_length (now 512) to 256 (longer rows are cut)."),
    ],
)
def test_out_of_memory_advice_names_the_setting_that_sizes_a_step(training, advice):
    config = JobConfig.model_validate(build_config({"training": training}, preset=""))
    assert advice in tasks.explain_failure(MemoryError(), config)


def test_a_full_disk_is_named(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoint-20"))
    reason = tasks.explain_failure(full, CONFIG)
    assert reason.startswith("The disk is full") and "training.keep_last, now 2" in reason
    other = OSError(errno.EACCES, "Permission denied")
    assert tasks.explain_failure(other, CONFIG) == "PermissionError: [Errno 13] Permission denied"
