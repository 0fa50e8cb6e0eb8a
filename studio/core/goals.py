"""The guided Train tab's choices: a method in one plain sentence, and a goal ("quick try",
"balanced", "best quality") that, with the data's row count and token lengths, gives
every other setting. The result is a partial config that build_config validates like
any other; the Advanced section shows it and the user may still change any field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from studio.core.config import DEMO_PRESET, PRESETS, deep_merge

METHODS: dict[str, str] = {
    "lora": "LoRA: trains small add-on weights on top of the model. Fast, light, and the right start almost always.",
    "qlora": "QLoRA: LoRA on a model squeezed to 4 bits, so a big model fits on one GPU. Needs an NVIDIA GPU.",
    "full": "Full: trains every weight of the model. The most capacity, but slow and needs a lot of memory.",
}
GOALS = ("quick try", "balanced", "best quality")
DEFAULT_GOAL = "quick try"
LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class Goal:
    """How much training a goal buys, as passes over the data by data size."""

    epochs_small: float  # under 500 training rows: more passes, or the model sees too little
    epochs_large: float  # over 20,000 rows: fewer passes are enough
    rank: int
    learning_rate: float
    length_cap: int  # rows longer than this are cut, whatever the data holds
    evals: int  # evaluations over the run (each costs a pause)
    saves: int  # resumable checkpoints over the run


GOAL_SETTINGS: dict[str, Goal] = {
    "quick try": Goal(2.0, 1.0, 8, 2e-4, 512, 6, 3),
    "balanced": Goal(4.0, 2.0, 16, 2e-4, 1024, 10, 5),
    "best quality": Goal(8.0, 3.0, 32, 1e-4, 2048, 16, 8),
}
# The demo base learns the demo tasks at a high rate in minutes on a CPU; its goals scale
# the demo preset (bench/demo_job.py: "quick try" is that preset, ~2.5 min on 2 cores).
DEMO_EPOCHS = {"quick try": 8.0, "balanced": 12.0, "best quality": 20.0}


@dataclass(frozen=True)
class DataShape:
    """What the goal needs to know about the data."""

    train_rows: int
    max_tokens: int  # longest row, in tokens of the chosen base model and template
    mean_tokens: float


def fitting_length(max_tokens: int, cap: int) -> int:
    """The smallest usual cutoff that keeps every row whole, at most cap."""
    return min(next((n for n in LENGTHS if n >= max_tokens), LENGTHS[-1]), cap)


def _interpolate_epochs(goal: Goal, rows: int) -> float:
    """Passes over the data: goal.epochs_small up to 500 rows, falling on a log scale to
    goal.epochs_large at 20,000."""
    if rows <= 500:
        return goal.epochs_small
    if rows >= 20_000:
        return goal.epochs_large
    share = math.log(rows / 500) / math.log(40)
    return round(goal.epochs_small + share * (goal.epochs_large - goal.epochs_small), 1)


def goal_config(goal: str, method: str, base_model: str, data: DataShape | None) -> dict[str, Any]:
    """The partial config for a goal, a method and the data (None: not known yet)."""
    if goal not in GOAL_SETTINGS:
        raise ValueError(f"goal: '{goal}' is not one of {', '.join(GOALS)}")
    if method not in METHODS:
        raise ValueError(f"method: '{method}' is not one of {', '.join(METHODS)}")
    if base_model.strip() == "demo":
        partial = deep_merge(PRESETS[DEMO_PRESET], {"training": {"epochs": DEMO_EPOCHS[goal]}})
        partial.pop("model", None)
        return deep_merge(partial, {"adapter": {"method": method}})
    settings = GOAL_SETTINGS[goal]
    max_length = fitting_length(data.max_tokens, settings.length_cap) if data else min(512, settings.length_cap)
    # ~4096 tokens a step: long rows get small batches, short rows larger ones
    batch = max(1, min(16, 4096 // max_length))
    accum = max(1, 16 // batch)
    epochs = _interpolate_epochs(settings, data.train_rows) if data else settings.epochs_small
    steps = math.ceil(epochs * math.ceil(max(data.train_rows if data else 1000, 1) / (batch * accum)))
    return {
        "adapter": {
            "method": method,
            "r": settings.rank,
            "alpha": 2 * settings.rank,
            "dropout": 0.05,
        },
        "training": {
            "learning_rate": settings.learning_rate if method != "full" else settings.learning_rate / 10,
            "scheduler": "cosine",
            "warmup_ratio": 0.03,
            "epochs": epochs,
            "batch_size": batch,
            "grad_accum": accum,
            "max_length": max_length,
            "sample_every": max(1, steps // settings.evals),
            "save_every": max(1, steps // settings.saves),
            "gradient_checkpointing": method == "qlora",
        },
    }
