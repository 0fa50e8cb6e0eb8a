"""The pre-launch preview: device-dependent precision and optimizer choices, exact
parameter counts, a memory estimate that catches runs that cannot fit, and warnings in
plain words."""

from __future__ import annotations

from dataclasses import replace

import pytest

from studio.core.config import PRESETS, AdapterSection, TrainingSection, build_config
from studio.core.estimate import (
    GIB,
    Device,
    Shape,
    count_parameters,
    plan_job,
    read_shape,
    resolve_optim,
    resolve_precision,
)

CPU = Device(cuda=False, name="CPU", memory_bytes=16 * GIB, bf16=True, bitsandbytes=False)
OLD_CPU = Device(cuda=False, name="CPU", memory_bytes=16 * GIB, bf16=False, bitsandbytes=False)
A100 = Device(cuda=True, name="A100", memory_bytes=80 * GIB, bf16=True, bitsandbytes=True)
T4 = Device(cuda=True, name="T4", memory_bytes=16 * GIB, bf16=False, bitsandbytes=True)
RTX_24GB = Device(cuda=True, name="RTX 4090", memory_bytes=24 * GIB, bf16=True, bitsandbytes=True)
LLAMA_7B = Shape(vocab=32000, hidden=4096, layers=32, intermediate=11008, heads=32, kv_heads=32, tied=False)


@pytest.mark.parametrize(
    "device,wanted,expected",
    [
        (CPU, "auto", "fp32"),  # bf16 autocast grows memory on CPUs (see resolve_precision)
        (CPU, "bf16", "bf16"),
        (OLD_CPU, "auto", "fp32"),
        (A100, "auto", "bf16"),
        (T4, "auto", "fp16"),
        (CPU, "fp16", "fp32"),  # never fp16 on a CPU
        (OLD_CPU, "bf16", "fp32"),
        (T4, "fp16", "fp16"),
        (A100, "fp32", "fp32"),
    ],
)
def test_precision_follows_the_device(device, wanted, expected):
    precision, note = resolve_precision(TrainingSection(precision=wanted), device)
    assert precision == expected
    assert (note is not None) == (wanted not in ("auto", expected))


def test_8bit_adamw_falls_back_on_cpu_with_a_reason():
    assert resolve_optim(TrainingSection(optim="adamw_8bit"), A100) == ("adamw_bnb_8bit", None)
    optim, note = resolve_optim(TrainingSection(optim="adamw_8bit"), CPU)
    assert optim == "adamw_torch_fused" and "CUDA GPU" in note


def test_counts_match_the_model_the_worker_builds(tiny_model_dir):
    from transformers import AutoConfig

    from worker.recipe import count_parameters as count_loaded
    from worker.recipe import load_model
    from studio.core.config import ModelSection

    config = AutoConfig.from_pretrained(tiny_model_dir)
    for adapter in (AdapterSection(), AdapterSection(use_dora=True, r=4), AdapterSection(method="full")):
        loaded = load_model(ModelSection(base_model=str(tiny_model_dir)), adapter)
        assert count_parameters(config, adapter) == count_loaded(loaded)


def test_rough_counts_for_a_llama_config(tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    shape = read_shape(config)
    exact = count_parameters(config, AdapterSection())
    plan = plan_job(build_config(), shape, CPU)
    assert (plan.trainable_params, plan.total_params) == exact


def test_qlora_7b_preset_fits_a_24gb_gpu_and_warns_on_cpu():
    config = build_config(preset="7B QLoRA on one 24 GB GPU")
    plan = plan_job(config, LLAMA_7B, RTX_24GB)
    assert plan.warnings == [] and plan.memory_bytes < 20 * GIB
    cpu_plan = plan_job(config, LLAMA_7B, Device(False, "CPU", 64 * GIB, True, True))
    assert any("QLoRA needs a CUDA GPU; this worker has none" in w for w in cpu_plan.warnings)


def test_a_run_that_cannot_fit_says_what_to_lower():
    config = build_config({"adapter": {"method": "full"}, "training": {"batch_size": 64, "max_length": 4096}})
    plan = plan_job(config, LLAMA_7B, RTX_24GB)
    too_big = [w for w in plan.warnings if w.startswith("This will likely not fit")]
    # packed (the default): the step's token budget is the setting, with a smaller value
    assert too_big and "Lower training.tokens_per_step (now 262144: batch_size 64 x max_length 4096) to 131072" in too_big[0]
    assert "gradient_checkpointing" in too_big[0] and "QLoRA" in too_big[0]
    padded = build_config({"adapter": {"method": "full"}, "training": {"batch_size": 64, "max_length": 4096, "packing": False}})
    assert any("Lower training.batch_size (now 64) to 32" in w for w in plan_job(padded, LLAMA_7B, RTX_24GB).warnings)
    assert "GiB" in plan.summary() and "trainable of" in plan.summary()


def test_packed_memory_follows_the_tokens_of_a_step():
    """Packed, a step holds tokens_per_step // max_length sequences of max_length tokens,
    whatever batch_size says; activations and logits grow with them, the rest does not."""
    memory = lambda training: plan_job(build_config({"training": training}), LLAMA_7B, A100).memory_bytes  # noqa: E731
    assert memory({"batch_size": 64, "tokens_per_step": 2048, "max_length": 512}) == memory({"batch_size": 4, "max_length": 512})
    assert memory({"tokens_per_step": 4096, "max_length": 512}) == memory({"batch_size": 8, "max_length": 512, "packing": False})
    assert memory({"tokens_per_step": 4600, "max_length": 512}) == memory({"tokens_per_step": 4096, "max_length": 512})
    one, four, eight = (memory({"tokens_per_step": n * 1024, "max_length": 512}) for n in (1, 4, 8))
    assert one < four < eight and eight - four == pytest.approx(4 / 3 * (four - one), rel=1e-6)  # linear in tokens


def test_full_7b_needs_more_than_lora_7b():
    lora = plan_job(build_config(), LLAMA_7B, A100)
    full = plan_job(build_config({"adapter": {"method": "full"}}), LLAMA_7B, A100)
    qlora = plan_job(build_config({"adapter": {"method": "qlora"}}), LLAMA_7B, A100)
    assert qlora.memory_bytes < lora.memory_bytes < full.memory_bytes
    assert full.trainable_params == full.total_params > 6e9


def test_every_preset_is_a_valid_config():
    for name in PRESETS:
        build_config(preset=name)


def test_preview_reads_the_base_model_config(tiny_model_dir):
    from studio.core.estimate import preview_job

    config = build_config({"model": {"base_model": str(tiny_model_dir)}, "adapter": {"method": "qlora"}})
    plan = preview_job(config, CPU)
    assert plan.trainable_params > 0 and plan.total_params > plan.trainable_params
    assert any("QLoRA needs a CUDA GPU; this worker has none" in w for w in plan.warnings)


def test_preview_of_an_unreadable_model_says_why(tmp_path):
    from studio.core.estimate import preview_job

    config = build_config({"model": {"base_model": str(tmp_path / "missing")}})
    plan = preview_job(config, CPU)
    assert plan.total_params == 0 and plan.warnings[0].startswith("Cannot size")


def test_multi_device_jobs_are_warned_about_where_they_cannot_help():
    two = build_config({"training": {"devices": 2}})
    assert any("2 CPU processes" in w for w in plan_job(two, LLAMA_7B, CPU).warnings)
    assert any("asks for 2 GPUs; this worker sees 1" in w for w in plan_job(two, LLAMA_7B, replace(A100, gpus=1)).warnings)
    assert not any("GPUs" in w for w in plan_job(two, LLAMA_7B, replace(A100, gpus=2)).warnings)


BENCH_LLAMA = Shape(vocab=832, hidden=512, layers=6, intermediate=2304, heads=8, kv_heads=8, tied=True)


@pytest.mark.parametrize(
    ("tokens_per_step", "dropout", "peak_mb"),
    [(1024, 0.05, 1511), (4096, 0.05, 3804), (8192, 0.05, 7153), (4096, 0.0, 3236)],
)
def test_cpu_estimate_is_near_the_measured_peak_rss(tokens_per_step, dropout, peak_mb):
    """Peak RSS of bench/train_throughput.py's studio runs (28M Llama, LoRA r=8 on every
    linear layer, fp32, 2 CPU threads; the last from one training step alone): the Train
    tab's estimate within 25%. Before it followed tokens_per_step and counted what a CPU
    keeps (activations measured, the process itself) it said 1,054 MB at every budget."""
    adapter = {"method": "lora", "r": 8, "alpha": 16, "dropout": dropout}
    config = build_config({"adapter": adapter, "training": {"tokens_per_step": tokens_per_step, "max_length": 512}})
    plan = plan_job(config, BENCH_LLAMA, OLD_CPU)
    assert plan.memory_bytes / 2**20 == pytest.approx(peak_mb, rel=0.25)


def test_checkpointing_is_called_needless_only_when_the_step_fits_without_it():
    """The advice to turn gradient checkpointing off looks at the step without it: 7B QLoRA
    at 4 x 1024 tokens needs about 23 GiB unchecked, so not on a 24 GB card; on an 80 GB one, yes."""
    config = build_config(preset="7B QLoRA on one 24 GB GPU")
    advice = lambda device: [w for w in plan_job(config, LLAMA_7B, device).warnings if "checkpointing costs" in w]  # noqa: E731
    assert plan_job(config, LLAMA_7B, RTX_24GB).memory_bytes < 8 * GIB  # checkpointed, it is small...
    assert advice(RTX_24GB) == []  # ...but it would not fit without
    assert advice(A100) != []


def test_the_fused_loss_leaves_the_logits_out_of_the_estimate():
    """Full logits of a 128k vocabulary at 4k tokens are 4 GiB (fp32 and gradient); the fused
    loss holds one chunk. A soft-capped model (Gemma 2) keeps its own loss, and its cost."""
    from dataclasses import replace

    big_vocab = replace(LLAMA_7B, vocab=128_256)
    training = {"batch_size": 4, "max_length": 1024}
    memory = lambda fused, shape=big_vocab: plan_job(  # noqa: E731
        build_config({"training": {**training, "fused_loss": fused}}), shape, A100).memory_bytes
    saved = memory(False) - memory(True)
    assert 3.5 * GIB < saved < 4.5 * GIB
    capped = replace(big_vocab, plain_head=False)
    assert memory(True, capped) == memory(False, capped)
