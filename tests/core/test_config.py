"""The job config: defaults, presets, bounds, and errors that name the field."""

import pytest

from studio.core.config import DEMO_PRESET, PRESETS, ConfigError, JobConfig, build_config, field_path_values


def test_defaults_are_valid_and_frozen():
    config = build_config()
    assert config.version == 1 and config.adapter.method == "lora"
    with pytest.raises(Exception):
        config.training.learning_rate = 1.0  # frozen: a job's config never changes


def test_user_values_win_over_preset():
    config = build_config({"training": {"epochs": 1}}, preset=DEMO_PRESET)
    assert config.training.epochs == 1
    assert config.training.learning_rate == PRESETS[DEMO_PRESET]["training"]["learning_rate"]


@pytest.mark.parametrize(
    "partial,field",
    [
        ({"training": {"batch_size": 0}}, "config.training.batch_size"),
        ({"training": {"warmup_ratio": 0.9}}, "config.training.warmup_ratio"),
        ({"adapter": {"dropout": -0.1}}, "config.adapter.dropout"),
        ({"adapter": {"method": "magic"}}, "config.adapter.method"),
        ({"data": {"validation_fraction": 2}}, "config.data.validation_fraction"),
        ({"training": {"fused_loss": "maybe"}}, "config.training.fused_loss"),
        ({"training": {"fused_loss": {"deep": [[[1]]]}}}, "config.training.fused_loss"),
        ({"training": {"fused_loss": "x" * 100_000}}, "config.training.fused_loss"),
        ({"nonsense": {}}, "config.nonsense"),
        ({"version": 2}, "config.version"),
    ],
)
def test_bad_values_name_the_field(partial, field):
    with pytest.raises(ConfigError) as info:
        build_config(partial)
    assert any(line.startswith(field) for line in info.value.errors), info.value.errors


def test_every_field_has_help_text():
    flat = field_path_values(JobConfig())
    for path in flat:
        section, name = path.split(".")
        info = type(getattr(JobConfig(), section)).model_fields[name]
        assert info.description, f"{path} has no description"


def test_config_round_trips_through_json():
    config = build_config({"data": {"probe_prompts": ["Say hi", "  "]}})
    assert config.data.probe_prompts == ("Say hi",)
    assert JobConfig.model_validate_json(config.model_dump_json()) == config
