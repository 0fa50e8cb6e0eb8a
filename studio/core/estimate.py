"""What a job will need before it starts: the device a worker trains on, the precision and
optimizer it will really use there, parameter counts, a memory estimate and warnings in
plain words.

The worker resolves precision and optimizer with the same functions the Train tab uses
for its preview, so what the form promises is what the job does. No gradio, no DB.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field

from studio.core.config import AdapterSection, JobConfig, TrainingSection

GIB = 1024**3


@dataclass(frozen=True)
class Device:
    """The accelerator a worker trains on, as far as training choices care."""

    cuda: bool
    name: str
    memory_bytes: int  # GPU memory, or the machine's RAM on a CPU worker
    bf16: bool  # native bf16 math (Ampere+ GPU, or a CPU with AVX512-BF16 / AMX)
    bitsandbytes: bool  # the package is importable
    gpus: int = 0  # CUDA devices visible
    cpus: int = 0  # CPU cores (0: not reported, by a worker from before this field)
    flops: float = 0.0  # training FLOP/s a short calibration run measured here (0: not measured)


def detect_device() -> Device:
    """The device of this process (GPU 0 when there is one)."""
    import psutil
    import torch

    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Device(
            True, props.name, props.total_memory, torch.cuda.is_bf16_supported(), has_bnb, torch.cuda.device_count()
        )
    cpu_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return Device(False, "CPU", psutil.virtual_memory().total, cpu_bf16, has_bnb, cpus=os.cpu_count() or 1)


def device_capacity(device: Device) -> int:
    """How many processes a job may train with on device: its GPUs, or on a CPU worker its
    cores (one process per core at most; 64 when it did not say)."""
    if device.cuda:
        return max(device.gpus, 1)
    return device.cpus or 64


def check_devices(training: TrainingSection, device: Device) -> str | None:
    """Why this worker cannot give a job its training.devices, or None."""
    have = device_capacity(device)
    if training.devices > have:
        what = "GPUs" if device.cuda else "CPU cores"
        return f"training.devices: the job asks for {training.devices} devices; this worker has {have} {what}"
    return None


def resolve_precision(training: TrainingSection, device: Device) -> tuple[str, str | None]:
    """The precision a job trains in on device ('bf16', 'fp16' or 'fp32'), and a note when
    that differs from what was asked."""
    wanted = training.precision
    if wanted == "auto":
        if not device.cuda:
            # bf16 autocast on a CPU is ~1.3x faster, but every new batch shape adds oneDNN
            # kernels and buffers: the process grew ~30 MB a step over a 70-step run here.
            return "fp32", None
        return ("bf16", None) if device.bf16 else ("fp16", None)
    if wanted == "fp16" and not device.cuda:
        return "fp32", "fp16 needs a CUDA GPU (on a CPU it is slow and unstable): training in fp32"
    if wanted == "bf16" and not device.bf16:
        return "fp32", f"{device.name} has no bf16 support: training in fp32"
    return wanted, None


def resolve_optim(training: TrainingSection, device: Device) -> tuple[str, str | None]:
    """The transformers optimizer name, and a note when the choice falls back."""
    if training.optim == "adamw_8bit":
        if device.cuda and device.bitsandbytes:
            return "adamw_bnb_8bit", None
        why = "no CUDA GPU on this worker" if not device.cuda else "bitsandbytes is not installed"
        return "adamw_torch_fused", f"8-bit AdamW needs bitsandbytes on a CUDA GPU ({why}): using AdamW"
    return "adamw_torch_fused", None  # transformers' own default on torch >= 2.8


@dataclass(frozen=True)
class Plan:
    """The pre-launch preview shown on the Train tab."""

    total_params: int
    trainable_params: int
    memory_bytes: int
    precision: str
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        share = 100 * self.trainable_params / max(self.total_params, 1)
        return (
            f"{self.trainable_params:,} trainable of {self.total_params:,} parameters ({share:.2f}%); "
            f"about {self.memory_bytes / GIB:.1f} GiB to train in {self.precision}"
        )


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder-only transformer that the estimate needs."""

    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    tied: bool
    plain_head: bool = True  # logits are just the output layer's product: the fused loss applies

    @property
    def linear_params(self) -> int:
        """Weights of the linear layers that get adapters (attention + MLP, all layers)."""
        head_dim = self.hidden // self.heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        return self.layers * (attention + 3 * self.hidden * self.intermediate)

    @property
    def lora_fan_sum(self) -> int:
        """Sum of (in + out) over the adapted layers: LoRA parameters per unit of rank."""
        kv = self.kv_heads * (self.hidden // self.heads)
        attention = (2 * self.hidden) * 2 + (self.hidden + kv) * 2
        return self.layers * (attention + 3 * (self.hidden + self.intermediate))

    @property
    def total_params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.linear_params + self.layers * 2 * self.hidden + self.hidden


def read_shape(model_config) -> Shape:
    """Sizes from a transformers config (Llama-style names, with GPT-2 fallbacks)."""
    get = lambda *names, default=None: next(  # noqa: E731
        (getattr(model_config, n) for n in names if getattr(model_config, n, None) is not None), default
    )
    hidden = get("hidden_size", "n_embd", "d_model")
    heads = get("num_attention_heads", "n_head", default=1)
    return Shape(
        vocab=get("vocab_size"),
        hidden=hidden,
        layers=get("num_hidden_layers", "n_layer"),
        intermediate=get("intermediate_size", "n_inner", default=None) or 4 * hidden,
        heads=heads,
        kv_heads=get("num_key_value_heads", default=heads),
        tied=bool(get("tie_word_embeddings", default=True)),
        plain_head=plain_logits(model_config),
    )


def plain_logits(model_config) -> bool:
    """Whether the model's logits are just its output layer's product (no soft-capping as in
    Gemma 2, no logit scale as in Cohere): then the fused loss can stand in for its own."""
    return all(getattr(model_config, name, None) is None for name in ("final_logit_softcapping", "logit_scale"))


def find_target_modules(model) -> list[str]:
    """Names of the layers that get adapters by default: every linear layer (quantized and
    GPT-2 style Conv1D ones included) except the output head, which maps to the vocabulary
    and would make the adapter as big as the embeddings."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    found = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head
    }
    return sorted(found)


def count_parameters(model_config, adapter: AdapterSection) -> tuple[int, int]:
    """(trainable, total) parameters for adapter on a model built from model_config, on
    the meta device: exact counts without allocating a single weight. The total includes
    the adapters, as peft counts it."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    if adapter.method == "full":
        total = sum(p.numel() for p in model.parameters())
        return total, total
    from peft import LoraConfig, get_peft_model

    targets = list(adapter.target_modules) or find_target_modules(model)
    lora = LoraConfig(r=adapter.r, target_modules=targets, use_dora=adapter.use_dora, task_type="CAUSAL_LM")
    params = list(get_peft_model(model, lora).parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def plan_job(config: JobConfig, shape: Shape, device: Device, counts: tuple[int, int] | None = None) -> Plan:
    """Parameter counts (exact ones from `count_parameters` when given), memory estimate
    and warnings for config on device.

    The estimate is rough (weights + gradients + AdamW state + the activations of a full
    step + on a CPU the process itself): it is there to catch runs that cannot fit. On a
    CPU it is measured against peak RSS (bench/train_throughput.py prints both).
    """
    adapter, training = config.adapter, config.training
    precision, precision_note = resolve_precision(training, device)
    if counts is None:  # rough: Llama-style layers, no DoRA magnitudes
        base = shape.total_params
        counts = (base, base) if adapter.method == "full" else (adapter.r * shape.lora_fan_sum, base + adapter.r * shape.lora_fan_sum)
    trainable, total = counts

    weight_bytes = _weight_bytes(adapter, shape, precision, device)
    optim_bytes = 8 if training.optim == "adamw" or not device.cuda else 2  # two moments
    state = trainable * (4 + 4 + optim_bytes)  # fp32 master weights + gradients + moments
    # a step's tensors: packed, the bins tokens_per_step holds, else batch_size rows,
    # each padded to at most max_length
    tokens = training.sequences_per_step * training.max_length
    act_bytes = 2 if precision in ("bf16", "fp16") else 4
    activations = full_activations = tokens * shape.layers * _saved_values(shape, adapter, device) * act_bytes
    if training.gradient_checkpointing:
        activations = tokens * shape.layers * shape.hidden * act_bytes + full_activations // shape.layers
    if training.fused_loss and shape.plain_head:  # a chunk's logits and their gradient; the hidden states' gradient
        logits = 2 * LOSS_CHUNK_BYTES + tokens * shape.hidden * 4
    else:
        logits = tokens * shape.vocab * 4 * 2  # fp32 logits and their gradient
    runtime = 0 if device.cuda else CPU_RUNTIME_BYTES
    memory = int(1.1 * (weight_bytes + state + activations + logits)) + runtime
    unchecked = memory + int(1.1 * (full_activations - activations))  # the same step without checkpointing

    warnings = [precision_note] if precision_note else []
    warnings += _method_warnings(adapter, device)
    if training.devices > 1 and not device.cuda:
        warnings.append(
            f"{training.devices} devices on a worker without a GPU means {training.devices} CPU processes "
            "sharing its cores: it works (for trying multi-GPU settings) but is not faster."
        )
    elif device.cuda and training.devices > max(device.gpus, 1):
        warnings.append(f"This job asks for {training.devices} GPUs; this worker sees {device.gpus}.")
    _, optim_note = resolve_optim(training, device)
    if optim_note:
        warnings.append(optim_note)
    if memory > 0.9 * device.memory_bytes:
        warnings.append(
            f"This will likely not fit: about {memory / GIB:.1f} GiB needed, {device.memory_bytes / GIB:.1f} GiB "
            f"on {device.name}. {smaller_step_advice(training)}"
            + ("" if adapter.method in ("qlora", "lora8bit") else ", or use QLoRA on a GPU")
            + "."
        )
    elif training.gradient_checkpointing and unchecked < 0.6 * device.memory_bytes:
        warnings.append("Gradient checkpointing costs about 35% speed and memory looks ample: consider turning it off.")
    return Plan(total, trainable, memory, precision, warnings)


def smaller_step_advice(training: TrainingSection) -> str:
    """What to lower when a job runs (or would run) out of memory, with a value, as a
    sentence without its full stop. A step's activations grow with its tokens, which
    packing sets by training.tokens_per_step, else batch_size rows; halving a step and
    doubling grad_accum keeps the tokens per update."""
    t = training
    keep = f" and raise training.grad_accum to {2 * t.grad_accum} to keep the tokens per update"
    if t.packing and t.sequences_per_step > 1:
        now = t.tokens_per_step or f"{t.step_tokens}: batch_size {t.batch_size} x max_length {t.max_length}"
        half = t.sequences_per_step // 2
        advice = f"Lower training.tokens_per_step (now {now}) to {half * t.max_length}"
        advice += keep if t.sequences_per_step % 2 == 0 else ""
    elif not t.packing and t.batch_size > 1:
        advice = f"Lower training.batch_size (now {t.batch_size}) to {t.batch_size // 2}"
        advice += keep if t.batch_size % 2 == 0 else ""
    else:  # a step is one sequence (or row) already: only a shorter one is smaller
        advice = f"Lower training.max_length (now {t.max_length}) to {max(16, t.max_length // 2)} (longer rows are cut)"
    return advice + ("" if t.gradient_checkpointing else ", or turn on training.gradient_checkpointing")


# On a CPU the peak RSS also holds the process: Python with torch, transformers and peft
# (RSS ~0.45 GiB with the bench's 28M model loaded) and the allocator's working set of a step.
CPU_RUNTIME_BYTES = int(0.6 * GIB)
LOSS_CHUNK_BYTES = 64 * 2**20  # fp32 logits of one chunk of the fused loss (worker.fused_loss)


def _saved_values(shape: Shape, adapter: AdapterSection, device: Device) -> int:
    """Values kept for the backward pass per token per layer.

    GPU: ~34 x hidden bytes in 16 bits (Korthikanti et al.), SDPA keeping no seq x seq
    score matrix. CPU: measured from peak RSS at 2 and 8 sequences of 512 tokens a step
    (LoRA r=8 on every linear layer, fp32, Llamas of hidden 512 and 768): ~46 x hidden,
    ~14 x hidden more when LoRA's dropout copies each adapted layer's input; the values
    here are those over plan_job's 1.1 margin."""
    if device.cuda:
        return 17 * shape.hidden
    dropout = adapter.method != "full" and adapter.dropout > 0
    return (42 + (13 if dropout else 0)) * shape.hidden


def _weight_bytes(adapter: AdapterSection, shape: Shape, precision: str, device: Device) -> int:
    rest = shape.total_params - shape.linear_params
    if adapter.method == "qlora":
        return math.ceil(shape.linear_params * 0.53) + rest * 2  # NF4 + double-quantized scales
    if adapter.method == "lora8bit":
        return shape.linear_params + rest * 2
    if adapter.method == "full":
        return shape.total_params * 4  # fp32 master weights
    return shape.total_params * (2 if device.cuda and precision != "fp32" else 4)


def _method_warnings(adapter: AdapterSection, device: Device) -> list[str]:
    notes = []
    if adapter.method in ("qlora", "lora8bit"):
        label = "QLoRA" if adapter.method == "qlora" else "8-bit LoRA"
        if not device.bitsandbytes:
            notes.append(f"{label} needs the bitsandbytes package on the worker: pip install 'finetune-studio[gpu]'.")
        if not device.cuda:
            notes.append(
                f"{label} needs a CUDA GPU; this worker has none. It will run on the CPU, much slower than plain LoRA."
            )
    if adapter.method == "full" and not device.cuda:
        notes.append("Full fine-tuning on a CPU is slow and needs about 16 bytes per parameter; LoRA is usually enough.")
    return notes


def preview_job(config: JobConfig, device: Device | None = None) -> Plan:
    """The Train tab's preview for config: exact parameter counts from the base model's
    config file (no weights are read), the memory estimate and warnings for device
    (default: this machine, which runs the jobs in the embedded setup).

    A base model whose config cannot be read gives a plan of zeros whose only warning
    says why, so the form can still be shown."""
    from transformers import AutoConfig

    from studio.core.basemodels import bounded_load, resolve_base_model

    device = device or detect_device()
    base = config.model.base_model
    try:
        model_config = bounded_load(
            lambda: AutoConfig.from_pretrained(resolve_base_model(base), trust_remote_code=config.model.trust_remote_code),
            base,
        )
        shape = read_shape(model_config)
        counts = count_parameters(model_config, config.adapter)
    except Exception as exc:  # a hub id offline, a typo, an architecture we cannot size
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        return Plan(0, 0, 0, resolve_precision(config.training, device)[0], [f"Cannot size '{config.model.base_model}': {detail}"])
    return plan_job(config, shape, device, counts)
