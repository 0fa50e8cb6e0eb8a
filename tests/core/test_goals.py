"""The guided Train tab's goal presets: the data's size and row lengths drive the settings,
and every result is a config build_config accepts."""

from __future__ import annotations

import pytest

from studio.core.config import DEMO_PRESET, PRESETS, build_config
from studio.core.goals import GOALS, METHODS, DataShape, fitting_length, goal_config


@pytest.mark.parametrize("goal", GOALS)
@pytest.mark.parametrize("method", METHODS)
def test_every_goal_and_method_builds_a_valid_config(goal, method):
    for data in (None, DataShape(120, 90, 50.0), DataShape(50_000, 3000, 700.0)):
        config = build_config(goal_config(goal, method, "org/model", data))
        assert config.adapter.method == method


def test_the_data_drives_cutoff_passes_and_eval_spacing():
    short = build_config(goal_config("balanced", "lora", "org/model", DataShape(200, 90, 40.0))).training
    long = build_config(goal_config("balanced", "lora", "org/model", DataShape(40_000, 900, 400.0))).training
    assert short.max_length == 128 and long.max_length == 1024  # every row kept whole
    assert short.epochs > long.epochs  # small data gets more passes
    assert short.batch_size * short.max_length <= 4096 and long.batch_size * long.max_length <= 4096
    assert fitting_length(5000, cap=2048) == 2048


def test_goals_train_longer_as_they_go_and_the_demo_quick_try_is_the_demo_preset():
    data = DataShape(1000, 100, 60.0)
    epochs = [build_config(goal_config(g, "lora", "org/model", data)).training.epochs for g in GOALS]
    assert epochs == sorted(epochs) and epochs[0] < epochs[-1]
    demo = build_config(goal_config("quick try", "lora", "demo", data))
    assert demo == build_config(PRESETS[DEMO_PRESET])


def test_unknown_goal_or_method_is_named():
    with pytest.raises(ValueError, match="goal: 'fast'"):
        goal_config("fast", "lora", "demo", None)
    with pytest.raises(ValueError, match="method: 'lora8'"):
        goal_config("quick try", "lora8", "demo", None)
