"""Every training method runs through the real recipe on the tiny model and leaves a
folder plain transformers / peft load; target modules are found per architecture, can be
overridden, and a bad override is a clear error. Jobs run in this process (run_here)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from studio.core.config import AdapterSection, ModelSection
from sqlmodel import select

from studio.db import session_scope
from studio.models import JobStatus, MetricPoint
from studio.services import jobs
from worker.recipe import count_parameters, load_model

LLAMA_LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")


def _config(**adapter) -> dict:
    return {
        "adapter": adapter,
        "training": {"max_steps": 4, "batch_size": 8, "sample_every": 2, "max_length": 128, "max_new_tokens": 4},
        "data": {"probe_count": 1, "exact_match_rows": 2},
    }


def _final(ctx, job):
    assert job.status == JobStatus.succeeded, job.error
    (final,) = [c for c in jobs.job_checkpoints(ctx, job.id) if c.final]
    return ctx.settings.artifacts_root / final.path


@pytest.mark.parametrize(
    "adapter",
    [
        {"method": "lora"},
        {"method": "lora", "use_dora": True},
        {"method": "lora", "use_rslora": True, "r": 16},
        pytest.param({"method": "qlora"}, marks=needs_bnb),
        pytest.param({"method": "lora8bit"}, marks=needs_bnb),
    ],
    ids=["lora", "dora", "rslora", "qlora", "lora8bit"],
)
def test_adapter_methods_save_a_standard_peft_folder(run_here, ctx, tiny_model_dir, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = run_here(_config(**adapter))
    folder = _final(ctx, job)
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert sorted(saved["target_modules"]) == LLAMA_LINEAR
    assert saved["use_dora"] == adapter.get("use_dora", False)
    assert saved["use_rslora"] == adapter.get("use_rslora", False)
    logs = jobs.job_logs(ctx, job.id)
    assert any(line.endswith("on: " + ", ".join(LLAMA_LINEAR)) for line in logs), logs
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, folder)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    if adapter["method"] != "lora":
        assert any("CUDA GPU" in line for line in logs)


def test_full_fine_tuning_saves_a_standard_model_folder(run_here, ctx, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    job = run_here(_config(method="full"))
    folder = _final(ctx, job)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not (folder / "adapter_config.json").exists()
    trained = AutoModelForCausalLM.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, base.state_dict()[n])]
    assert len(changed) > 10  # every weight trains, not an adapter


def test_target_modules_override(tiny_model_dir):
    model_cfg = ModelSection(base_model=str(tiny_model_dir))
    every = load_model(model_cfg, AdapterSection())
    some = load_model(model_cfg, AdapterSection(target_modules=("q_proj", "self_attn.v_proj")))
    assert sorted(some.peft_config["default"].target_modules) == ["q_proj", "self_attn.v_proj"]
    assert 0 < count_parameters(some)[0] < count_parameters(every)[0]
    assert count_parameters(some)[1] - count_parameters(some)[0] == count_parameters(every)[1] - count_parameters(every)[0]
    assert not any("lm_head" in name for name, p in every.named_parameters() if p.requires_grad)


def test_unknown_target_module_fails_naming_the_field(run_here):
    job = run_here(_config(target_modules=["q_proj", "attention.query"]))
    assert job.status == JobStatus.failed
    assert job.error.startswith("adapter.target_modules: no layer named attention.query")
    assert "q_proj" in job.error  # lists what the model has


def test_cpu_fallbacks_are_logged(run_here, ctx):
    config = _config(method="lora")
    config["training"].update(precision="fp16", optim="adamw_8bit")
    job = run_here(config)
    assert job.status == JobStatus.succeeded, job.error
    logs = "\n".join(jobs.job_logs(ctx, job.id))
    if not torch.cuda.is_available():
        assert "fp16 needs a CUDA GPU" in logs and "training on CPU in fp32" in logs
        assert "8-bit AdamW needs bitsandbytes on a CUDA GPU" in logs


def test_gradient_checkpointing_trains_the_adapters(run_here, ctx):
    config = _config(method="lora")
    config["training"]["gradient_checkpointing"] = True
    job = run_here(config)
    assert job.status == JobStatus.succeeded, job.error
    grad_norms = [m.grad_norm for m in jobs.job_metrics(ctx, job.id) if m.split == "train"]
    assert grad_norms and all(g and g > 0 for g in grad_norms)


@pytest.mark.parametrize("adapter", [{"method": "lora"}, {"method": "lora", "use_dora": True}])
def test_step_0_is_the_base_model_and_does_not_hold_up_the_first_step(ctx, run_here, adapter):
    """An adapter's step-0 evaluation runs with the adapter off after step 1 is reported;
    it must read exactly as the base model evaluated before training (a full fine-tune
    still evaluates first)."""
    def step_0(job):
        [point] = [m for m in jobs.job_metrics(ctx, job.id) if m.split == "eval" and m.step == 0]
        return point, [s.output for s in jobs.job_samples(ctx, job.id) if s.step == 0]

    config = _config(**adapter)
    # no warmup: step 1 really moves the adapter, so leaving it on would show
    config["training"].update(precision="fp32", warmup_ratio=0, learning_rate=1e-2)
    with_adapter = run_here(config)
    full = run_here({**config, "adapter": {"method": "full"}})
    assert with_adapter.status == full.status == JobStatus.succeeded
    (adapter_point, adapter_outputs), (full_point, full_outputs) = step_0(with_adapter), step_0(full)
    assert adapter_point.loss == pytest.approx(full_point.loss, abs=1e-5)
    assert adapter_point.exact_match == full_point.exact_match and adapter_outputs == full_outputs

    def recorded_at(job, split, step):
        with session_scope(ctx.engine) as session:
            return session.exec(select(MetricPoint.recorded_at).where(
                MetricPoint.job_id == job.id, MetricPoint.split == split, MetricPoint.step == step)).one()

    assert recorded_at(with_adapter, "train", 1) <= recorded_at(with_adapter, "eval", 0)
    assert recorded_at(full, "eval", 0) <= recorded_at(full, "train", 1)
