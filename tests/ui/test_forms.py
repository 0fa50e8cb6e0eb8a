"""The train form is generated from JobConfig: every field gets a bounded, described
control; the form's values round-trip into a partial config build_config accepts; a bad
value comes back as a ConfigError naming the field."""

from __future__ import annotations

import typing

import gradio as gr

from studio.core.config import AdapterSection
import pytest
from pydantic import Field

from studio.core.config import DEMO_PRESET, ConfigError, JobConfig, TrainingSection, build_config, field_path_values
from studio.ui.forms import SKIPPED, field_specs, form_values, partial_config, render_form


def test_every_config_field_but_the_fixed_ones_is_in_the_form():
    paths = {s.path for s in field_specs()}
    expected = set(field_path_values(JobConfig())) - SKIPPED
    assert paths == expected
    assert "model.base_model" not in paths and "data.dataset_version_id" not in paths


def test_controls_follow_annotations_bounds_and_descriptions():
    specs = {s.path: s for s in field_specs()}
    assert specs["model.trust_remote_code"].kind == "bool"
    assert specs["adapter.method"].kind == "choice" and specs["adapter.method"].choices == typing.get_args(
        AdapterSection.model_fields["method"].annotation
    )
    assert specs["data.probe_prompts"].kind == "lines"
    rank = specs["adapter.r"]
    assert (rank.kind, rank.minimum, rank.maximum, rank.default) == ("int", 1, 512, 8)
    assert rank.description == JobConfig.model_fields["adapter"].annotation.model_fields["r"].description
    lr = specs["training.learning_rate"]
    assert lr.kind == "float" and lr.minimum == 0.0 and lr.maximum == 1.0


def test_rendered_components_carry_bounds_info_and_values():
    with gr.Blocks():
        form = render_form(build_config({}, preset=DEMO_PRESET))
    controls = {s.path: c for s, c in zip(form.specs, form.components)}
    steps = controls["training.max_steps"]
    assert isinstance(steps, gr.Number)
    assert (steps.minimum, steps.maximum, steps.precision) == (0, 1_000_000, 0)
    assert steps.info == "Stop after this many steps (0: use epochs)."
    assert controls["training.learning_rate"].value == 3e-3  # the preset's, not the default
    assert isinstance(controls["training.scheduler"], gr.Dropdown)
    assert isinstance(controls["template.train_on_prompt"], gr.Checkbox)
    assert isinstance(controls["adapter.target_modules"], gr.Textbox)
    assert all(isinstance(c, gr.Number) for s, c in zip(form.specs, form.components) if s.kind in ("int", "float"))


def test_a_new_config_field_appears_without_ui_edits():
    class Training(TrainingSection):
        label_smoothing: float = Field(default=0.0, ge=0.0, le=1.0, description="Soften the targets.")

    class Config(JobConfig):
        training: Training = Training()

    with gr.Blocks():
        form = render_form(Config(), Config)
    spec = next(s for s in form.specs if s.path == "training.label_smoothing")
    control = form.components[form.specs.index(spec)]
    assert isinstance(control, gr.Number)
    assert (control.minimum, control.maximum, control.info) == (0.0, 1.0, "Soften the targets.")
    assert form.partial(form.values(Config()))["training"]["label_smoothing"] == 0.0


def test_unsupported_annotation_is_named():
    class Training(TrainingSection):
        weights: dict[str, float] = Field(default_factory=dict)

    class Config(JobConfig):
        training: Training = Training()

    with pytest.raises(TypeError, match="training.weights"):
        field_specs(Config)


def test_values_round_trip_into_a_config_build_config_accepts():
    specs = field_specs()
    source = build_config(
        {"data": {"probe_prompts": ("Say hi.", "Count to 3.")}, "adapter": {"target_modules": ("q_proj", "v_proj")}},
        preset=DEMO_PRESET,
    )
    values = form_values(specs, source)
    assert values[[s.path for s in specs].index("data.probe_prompts")] == "Say hi.\nCount to 3."
    partial = partial_config(specs, values)
    assert set(partial) == {"model", "data", "template", "adapter", "training"}
    assert build_config(partial, preset="") == source


def test_text_lines_are_cleaned_and_numbers_come_back_typed():
    specs = field_specs()
    values = form_values(specs, JobConfig())
    paths = [s.path for s in specs]
    values[paths.index("data.probe_prompts")] = "  first  \n\n second\n"
    values[paths.index("training.max_steps")] = 12.0  # what a Number with precision 0 may send
    partial = partial_config(specs, values)
    assert partial["data"]["probe_prompts"] == ("first", "second")
    assert partial["training"]["max_steps"] == 12 and isinstance(partial["training"]["max_steps"], int)


@pytest.mark.parametrize(
    ("path", "bad", "says"),
    [
        ("training.learning_rate", 0.0, "config.training.learning_rate"),
        ("adapter.r", 0, "config.adapter.r"),
        ("data.validation_fraction", 0.9, "config.data.validation_fraction"),
        ("training.max_steps", None, "config.training.max_steps"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_field(path, bad, says):
    specs = field_specs()
    values = form_values(specs, JobConfig())
    values[[s.path for s in specs].index(path)] = bad
    with pytest.raises(ConfigError) as caught:
        build_config(partial_config(specs, values), preset="")
    assert any(line.startswith(says) for line in caught.value.errors), caught.value.errors


def test_launch_handler_shows_config_errors_and_stores_nothing(ctx, alpaca_file):
    from studio.services import datasets, jobs
    from studio.ui.train_tab import launch

    dataset, _ = datasets.create_dataset(ctx, alpaca_file.name, alpaca_file.read_bytes())
    with gr.Blocks():
        form = render_form(JobConfig())
    values = form.values(JobConfig())
    values[[s.path for s in form.specs].index("training.learning_rate")] = 5.0
    message, launched = launch(ctx, form, dataset.id, "demo", "", *values)
    assert "Learning rate (training.learning_rate): Input should be less than or equal to 1" in message
    assert "not started" in message
    assert jobs.list_jobs(ctx) == []
    message, *_ = launch(ctx, form, dataset.id, "/no/such/folder", "", *form.values(JobConfig()))
    assert "(model.base_model): &#x27;/no/such/folder&#x27; is not a model folder the studio may load" in message
    message, *_ = launch(ctx, form, 999, "demo", "", *form.values(JobConfig()))
    assert "dataset 999 does not exist" in message
