"""The job config: one typed, frozen, versioned object. The UI form is built from it, the
REST API validates with it, the DB stores it as the job's frozen config and the worker
reads it. Every field's bounds and description are the single source for UI limits,
help text and error messages.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_VERSION = 1


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSection(Section):
    base_model: str = Field(
        default="demo",
        min_length=1,
        max_length=500,
        description="Hugging Face hub id, a local model folder, or 'demo' (the offline demo base).",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run model code shipped with the checkpoint. Only for models you trust.",
    )


class DataSection(Section):
    dataset_version_id: int = Field(default=0, ge=0, description="Dataset version to train on.")
    validation_fraction: float = Field(
        default=0.1, ge=0.0, le=0.5, description="Share of rows held out for evaluation."
    )
    probe_prompts: tuple[str, ...] = Field(
        default=(),
        max_length=16,
        description="Instructions the model answers at every sample step; empty: held-out rows.",
    )
    probe_count: int = Field(
        default=4, ge=0, le=16, description="Held-out rows shown as samples when no probes are given."
    )
    exact_match_rows: int = Field(
        default=32, ge=0, le=1000, description="Held-out rows whose answers are scored (exact match) at each eval."
    )

    @field_validator("probe_prompts")
    @classmethod
    def _no_blank_probes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(p.strip() for p in value if p.strip())
        if any(len(p) > 4000 for p in cleaned):
            raise ValueError("a probe prompt is longer than 4000 characters")
        return cleaned


TEMPLATE_NAMES = ("alpaca", "chatml", "llama2", "llama3", "model", "custom")


class TemplateSection(Section):
    """How rows become text and which tokens are trained (studio.core.templates)."""

    name: Literal["alpaca", "chatml", "llama2", "llama3", "model", "custom"] = Field(
        default="alpaca",
        description="How rows become text: Alpaca, ChatML, Llama-2, Llama-3, the model's own chat "
        "template, or a custom (sandboxed Jinja) template. Training, evaluation and chat all use it.",
    )
    system_prompt: str = Field(
        default="",
        max_length=4000,
        description="System text for rows that have none (Alpaca: replaces the preamble).",
    )
    custom_template: str = Field(
        default="",
        max_length=20_000,
        description="The custom template: Jinja over messages, bos_token, eos_token and "
        "add_generation_prompt, like a Hugging Face chat template. Used when name is 'custom'.",
    )
    train_on_prompt: bool = Field(
        default=False, description="Also train on prompt tokens (default: assistant replies only)."
    )
    diversity: int = Field(
        default=1,
        ge=1,
        le=4,
        description="Phrasings of the instruction wrapper (Alpaca) or system text (chat templates) "
        "used in training, one picked per row by a seeded hash, so the model does not overfit one "
        "format. 1: always the standard one. Chat and evaluation always use the standard one.",
    )
    diversity_seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the per-row phrasing pick.")
    general_text_share: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="Share of training rows that are general text (the built-in corpus), trained "
        "whole, against forgetting what the base model knew. 0: none.",
    )

    @model_validator(mode="after")
    def _custom_needs_a_template(self) -> "TemplateSection":
        if self.name == "custom":
            if not self.custom_template.strip():
                raise ValueError("custom_template: write a template, or choose another template name")
            from studio.core.templates import check_custom_template  # templates imports this module

            problem = check_custom_template(self.custom_template)
            if problem:
                raise ValueError(f"custom_template: {problem}")
        return self


class AdapterSection(Section):
    method: Literal["lora", "qlora", "lora8bit", "full"] = Field(
        default="lora",
        description=(
            "lora: small adapters on the full-precision base; qlora: adapters on a 4-bit (NF4) base, "
            "for big models on one GPU; lora8bit: adapters on an 8-bit base; full: train every weight."
        ),
    )
    r: int = Field(default=8, ge=1, le=512, description="LoRA rank: adapter capacity.")
    alpha: int = Field(default=16, ge=1, le=4096, description="LoRA scale (often 2 x rank).")
    dropout: float = Field(default=0.05, ge=0.0, le=0.9, description="LoRA dropout.")
    use_dora: bool = Field(
        default=False,
        description="DoRA: learn each weight's magnitude apart from its direction; closer to full "
        "fine-tuning, slower steps.",
    )
    use_rslora: bool = Field(
        default=False,
        description="rsLoRA: scale adapters by alpha/sqrt(rank) instead of alpha/rank; helps at high rank.",
    )
    target_modules: tuple[str, ...] = Field(
        default=(),
        max_length=64,
        description="Layer names that get adapters (e.g. q_proj, v_proj); empty: every linear layer "
        "except the output head, found for the architecture and shown in the job log.",
    )

    @field_validator("target_modules")
    @classmethod
    def _clean_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.strip() for name in value if name.strip()))


class TrainingSection(Section):
    learning_rate: float = Field(default=2e-4, gt=0.0, le=1.0, description="Peak learning rate.")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=0.5, description="Share of steps warming up.")
    epochs: float = Field(default=3.0, gt=0.0, le=100.0, description="Passes over the training rows.")
    max_steps: int = Field(
        default=0, ge=0, le=1_000_000, description="Stop after this many steps (0: use epochs)."
    )
    batch_size: int = Field(default=8, ge=1, le=1024, description="Rows per step per device.")
    grad_accum: int = Field(default=1, ge=1, le=1024, description="Steps summed per update.")
    max_length: int = Field(
        default=512, ge=16, le=131_072, description="Tokens per row; longer rows are cut."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, ge=0.0, le=1000.0, description="Gradient clipping.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="auto: bf16 on GPUs that have it, else fp16; fp32 on a CPU (bf16 autocast there is "
        "faster but its memory grows with every new batch shape). fp16 is never used on a CPU.",
    )
    # Measured with bench/train_throughput.py (28M Llama, LoRA, 320 rows, 2 shared CPU cores):
    # packed steps pad 0.5-3% (padded batches: 44%); a 1k-token step takes 0.45x the peak
    # RSS of padded batch 8 at the same held-out loss, the default 4k step 1.1x and 1.05x
    # the held-out loss (a quarter of the steps per epoch); row length grouping was ~3% worse.
    packing: bool = Field(
        default=True,
        description="Packing: rows are packed into sequences of at most max_length tokens, whose "
        "rows never attend to each other, so almost no compute goes to padding.",
    )
    tokens_per_step: int = Field(
        default=0,
        ge=0,
        le=134_217_728,
        description="With packing: the token budget of a step per device. Rows are packed into sequences "
        "of at most max_length tokens, and a step takes tokens_per_step // max_length of them. "
        "0: batch_size x max_length.",
    )
    group_by_length: bool = Field(
        default=False,
        description="Without packing: batch rows of similar length together (less padding). "
        "Batches then come longest-first within large random groups, which can cost some held-out loss. "
        "Packed steps always hold sequences of about the same length.",
    )
    devices: int = Field(
        default=1,
        ge=1,
        le=64,
        description="GPUs this job trains on, one process each (DDP through torchrun); batch size is "
        "per GPU. More than 1 needs a worker that sees that many GPUs (on a CPU worker: that many CPU "
        "processes, for testing).",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: much less memory at ~35% extra "
        "compute. Turn on only when a run does not fit.",
    )
    fused_loss: bool = Field(
        default=True,
        description="Compute the loss together with the output layer, a chunk of tokens at a time, on "
        "response tokens only: the step's logits are never all in memory (most saved with big "
        "vocabularies), and steps are faster. Models with soft-capped logits keep their own loss; the "
        "job log says which.",
    )
    optim: Literal["adamw", "adamw_8bit"] = Field(
        default="adamw",
        description="Optimizer. adamw_8bit keeps its state in 8 bits (bitsandbytes, CUDA only; on a "
        "CPU worker it falls back to adamw and says so in the log).",
    )
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Seed for data order and init.")
    sample_every: int = Field(
        default=20, ge=1, le=100_000, description="Eval every N steps: held-out loss and probe generations."
    )
    save_every: int = Field(
        default=50, ge=0, le=1_000_000, description="Steps between resumable checkpoints (0: only the final one)."
    )
    keep_last: int = Field(default=2, ge=1, le=100, description="Checkpoints kept; older ones are deleted.")
    max_new_tokens: int = Field(
        default=64, ge=1, le=4096, description="Longest probe generation, in tokens."
    )
    evaluate_when_done: bool = Field(
        default=False,
        description="When the job succeeds, evaluate its final result against the base model on its "
        "held-out rows (answers as long as the probes'); the results are in the Evaluate tab.",
    )

    @model_validator(mode="after")
    def _step_budget_fits(self) -> "TrainingSection":
        if self.tokens_per_step and not self.packing:
            raise ValueError(
                "tokens_per_step: a token budget needs packing; without it a step is batch_size rows "
                "(turn packing on, or set tokens_per_step to 0)"
            )
        if self.tokens_per_step and self.tokens_per_step < self.max_length:
            raise ValueError(
                f"tokens_per_step: {self.tokens_per_step} is less than max_length ({self.max_length}); "
                "a step must hold at least one full sequence"
            )
        return self

    @property
    def step_tokens(self) -> int:
        """The step's token budget per device: tokens_per_step, or batch_size x max_length."""
        return self.tokens_per_step or self.batch_size * self.max_length

    @property
    def sequences_per_step(self) -> int:
        """Sequences per step per device: packed bins of max_length tokens, else rows."""
        return self.step_tokens // self.max_length if self.packing else self.batch_size


class JobConfig(Section):
    """Everything a training job needs, frozen when the job is created."""

    version: Literal[1] = CONFIG_VERSION
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    template: TemplateSection = TemplateSection()
    adapter: AdapterSection = AdapterSection()
    training: TrainingSection = TrainingSection()


SECTIONS: dict[str, type[Section]] = {
    "model": ModelSection,
    "data": DataSection,
    "template": TemplateSection,
    "adapter": AdapterSection,
    "training": TrainingSection,
}

# Presets are partial configs laid under what the user sets.
PRESETS: dict[str, dict[str, Any]] = {
    # The demo: LoRA on the demo base over the demo dataset (studio.core.demo), sized to
    # finish within 3 minutes on 2 CPU cores (bench/demo_job.py): 1440 steps lift held-out
    # exact match from 0 to ~0.39 in ~160 s; its 13 evals and 7 saves cost a few percent.
    "quick try on CPU (demo)": {
        "model": {"base_model": "demo"},
        "data": {"exact_match_rows": 64},
        "adapter": {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
        "training": {
            "learning_rate": 3e-3,
            "scheduler": "cosine",
            "warmup_ratio": 0.05,
            "epochs": 8.0,
            "batch_size": 16,
            "max_length": 128,
            "packing": False,  # for a model this small, attention over a packed batch costs more than padding
            "sample_every": 120,
            "save_every": 200,
            "max_new_tokens": 24,
        },
    },
    # A 7B model in 4-bit is ~4 GB of weights; batch 4 x 1024 tokens with checkpointing
    # leaves room for activations on a 24 GB card; 4 x 4 accumulation gives 16 rows/update.
    "7B QLoRA on one 24 GB GPU": {
        "adapter": {"method": "qlora", "r": 16, "alpha": 32, "dropout": 0.05},
        "training": {
            "learning_rate": 2e-4,
            "scheduler": "cosine",
            "warmup_ratio": 0.03,
            "epochs": 2.0,
            "batch_size": 4,
            "grad_accum": 4,
            "max_length": 1024,
            "precision": "auto",
            "gradient_checkpointing": True,
            "optim": "adamw_8bit",
            "sample_every": 100,
            "save_every": 200,
        },
    },
    # Models up to ~7B in bf16 on one 40-80 GB GPU: plain LoRA on every linear layer, no
    # checkpointing (it costs ~35% speed); 4 x 4 accumulation gives 16 rows per update.
    "LoRA on one GPU": {
        "adapter": {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05},
        "training": {
            "learning_rate": 2e-4,
            "scheduler": "cosine",
            "warmup_ratio": 0.03,
            "epochs": 3.0,
            "batch_size": 4,
            "grad_accum": 4,
            "max_length": 1024,
            "precision": "auto",
            "sample_every": 100,
            "save_every": 200,
        },
    },
}
DEMO_PRESET = "quick try on CPU (demo)"


class ConfigError(ValueError):
    """A config value a user set is wrong; `errors` name each field and what is wrong."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe_errors(exc: ValidationError, prefix: str = "config") -> list[str]:
    """Turn pydantic's errors into 'config.training.learning_rate: must be > 0' lines."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        lines.append(f"{path}: {err['msg']}")
    return lines


def build_config(partial: Mapping[str, Any] | None = None, preset: str | None = None) -> JobConfig:
    """Validate a partial config laid over a preset and the defaults.

    Raises ConfigError naming every bad field.
    """
    if partial is not None and not isinstance(partial, Mapping):
        raise ConfigError(["config: must be an object of sections"])
    layers: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError([f"preset: unknown preset '{preset}'; choose one of {sorted(PRESETS)}"])
        layers = deep_merge(layers, PRESETS[preset])
    layers = deep_merge(layers, partial or {})
    try:
        return JobConfig.model_validate(layers)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def field_path_values(config: JobConfig) -> dict[str, Any]:
    """Flat {'training.learning_rate': 0.0002, ...} view, for forms and diffs."""
    flat = {}
    for section_name in SECTIONS:
        section = getattr(config, section_name)
        for name in type(section).model_fields:
            flat[f"{section_name}.{name}"] = getattr(section, name)
    return flat
