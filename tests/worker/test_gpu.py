"""The GPU path: QLoRA (NF4, double quantization, bf16 compute), bf16 mixed precision and
8-bit AdamW on CUDA. Skipped cleanly without a CUDA GPU (run with `-m gpu` on one)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from studio.core.config import AdapterSection, ModelSection, TrainingSection
from studio.core.estimate import detect_device, resolve_optim, resolve_precision
from studio.models import JobStatus
from studio.services import jobs
from worker.recipe import load_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")

QUICK = {
    "training": {"max_steps": 8, "batch_size": 8, "sample_every": 4, "max_length": 128, "max_new_tokens": 4},
    "data": {"probe_count": 1, "exact_match_rows": 2},
}


@needs_bnb
def test_qlora_loads_nf4_with_double_quant_and_bf16_compute(tiny_model_dir):
    import bitsandbytes as bnb

    model = load_model(ModelSection(base_model=str(tiny_model_dir)), AdapterSection(method="qlora"))
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized
    state = quantized[0].weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # nested: double quantization
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert quantized[0].compute_dtype == expected
    assert next(p for n, p in model.named_parameters() if "lora_A" in n).device.type == "cuda"


@needs_bnb
def test_qlora_job_trains_on_the_gpu(run_here, ctx):
    job = run_here({**QUICK, "adapter": {"method": "qlora"}, "training": {**QUICK["training"], "optim": "adamw_8bit"}})
    assert job.status == JobStatus.succeeded, job.error
    logs = "\n".join(jobs.job_logs(ctx, job.id))
    assert "8-bit AdamW needs" not in logs and "CUDA GPU" not in logs
    losses = [m.loss for m in jobs.job_metrics(ctx, job.id) if m.split == "train"]
    assert len(losses) == 8 and all(loss == loss for loss in losses)  # no NaN


def test_bf16_is_chosen_and_trains(run_here, ctx):
    device = detect_device()
    precision, _ = resolve_precision(TrainingSection(), device)
    assert precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    job = run_here(QUICK)
    assert job.status == JobStatus.succeeded, job.error
    assert any(f"in {precision}" in line for line in jobs.job_logs(ctx, job.id))


@needs_bnb
def test_8bit_adamw_is_used_on_cuda():
    optim, note = resolve_optim(TrainingSection(optim="adamw_8bit"), detect_device())
    assert optim == "adamw_bnb_8bit" and note is None


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
@needs_bnb
def test_qlora_job_on_two_gpus(run_here, ctx):
    job = run_here({**QUICK, "adapter": {"method": "qlora"}, "training": {**QUICK["training"], "devices": 2}})
    assert job.status == JobStatus.succeeded, job.error
    assert [m.step for m in jobs.job_metrics(ctx, job.id) if m.split == "train"] == list(range(1, 9))
    assert "DDP over 2 GPUs" in "\n".join(jobs.job_logs(ctx, job.id))
