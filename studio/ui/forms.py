"""The job-config form, generated from JobConfig, and `bind`, with which the tabs hand
their handlers the StudioContext.

Each pydantic field of a JobConfig section becomes one control, chosen by its annotation;
its Field(ge=, le=, description=) gives the control's bounds and help text, its default
the starting value. A new field in studio/core/config.py shows up here with no UI edit.
Values travel back as a partial config that `build_config` validates: the form never
checks values itself, so the messages a user sees are the config's own.
"""

from __future__ import annotations

import functools
import math
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence, Union, get_args, get_origin

import annotated_types
import gradio as gr
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from studio.core.config import JobConfig
from studio.ui.text import field_label, section_title

# Set by other controls (base model box, dataset dropdown) or fixed by the schema.
SKIPPED = frozenset({"version", "model.base_model", "data.dataset_version_id"})
OPEN_SECTIONS = frozenset({"training"})  # the rest start folded
FIELDS_PER_ROW = 3

Kind = Literal["bool", "choice", "int", "float", "text", "lines"]


@dataclass(frozen=True)
class FieldSpec:
    """What the form needs to know about one config field."""

    path: str  # "training.learning_rate"
    kind: Kind
    default: Any
    description: str = ""
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def elem_id(self) -> str:
        return "cfg-" + self.path.replace(".", "-")


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for rule in info.metadata:
        if isinstance(rule, (annotated_types.Ge, annotated_types.Gt)):
            low = getattr(rule, "ge", getattr(rule, "gt", None))
        elif isinstance(rule, (annotated_types.Le, annotated_types.Lt)):
            high = getattr(rule, "le", getattr(rule, "lt", None))
    return low, high


def spec_for(path: str, info: FieldInfo) -> FieldSpec:
    """The control for one pydantic field, from its annotation."""
    annotation = _unwrap_optional(info.annotation)
    common = dict(path=path, default=info.get_default(call_default_factory=True), description=info.description or "")
    if annotation is bool:
        return FieldSpec(kind="bool", **common)
    if get_origin(annotation) is Literal:
        return FieldSpec(kind="choice", choices=get_args(annotation), **common)
    if annotation in (int, float):
        low, high = _bounds(info)
        return FieldSpec(kind=annotation.__name__, minimum=low, maximum=high, **common)
    if annotation is str:
        return FieldSpec(kind="text", **common)
    if get_origin(annotation) is tuple and get_args(annotation) == (str, Ellipsis):
        return FieldSpec(kind="lines", **common)
    raise TypeError(f"{path}: the form has no control for {annotation!r}; add one in studio/ui/forms.py")


def field_specs(config_cls: type[BaseModel] = JobConfig, skip: frozenset[str] = SKIPPED) -> list[FieldSpec]:
    """One spec per field of each section (a field of config_cls that is a model)."""
    specs = []
    for section, section_field in config_cls.model_fields.items():
        section_cls = section_field.annotation
        if section in skip or not (isinstance(section_cls, type) and issubclass(section_cls, BaseModel)):
            continue
        for name, info in section_cls.model_fields.items():
            path = f"{section}.{name}"
            if path not in skip:
                specs.append(spec_for(path, info))
    return specs


# --- values <-> partial config ------------------------------------------------------


def to_form_value(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == "lines":
        return "\n".join(value or ())
    return value


def from_form_value(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == "lines":
        return tuple(line.strip() for line in (value or "").splitlines() if line.strip())
    if spec.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def partial_config(specs: Sequence[FieldSpec], values: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The form's values as {'section': {'field': value}}, for build_config / create_job."""
    if len(specs) != len(values):
        raise ValueError(f"{len(values)} form values for {len(specs)} fields")
    partial: dict[str, dict[str, Any]] = {}
    for spec, value in zip(specs, values):
        section, name = spec.path.split(".", 1)
        partial.setdefault(section, {})[name] = from_form_value(spec, value)
    return partial


def form_values(specs: Sequence[FieldSpec], config: BaseModel) -> list[Any]:
    """What each control shows for config (e.g. a preset laid over the defaults)."""
    values = []
    for spec in specs:
        section, name = spec.path.split(".", 1)
        values.append(to_form_value(spec, getattr(getattr(config, section), name)))
    return values


def explain_error(line: str) -> str:
    """'config.training.learning_rate: Input should be...' -> 'Learning rate
    (training.learning_rate): Input should be...', so the message names the control."""
    path, sep, message = line.partition(": ")
    path = path.removeprefix("config.")
    if not sep or path.count(".") != 1:
        return line
    return f"{field_label(path)} ({path}): {message}"


# --- rendering ------------------------------------------------------------------------


def component_for(spec: FieldSpec, value: Any) -> gr.components.Component:
    """A Gradio control for spec showing value, labelled and bounded from the schema."""
    common = dict(label=field_label(spec.path), info=spec.description or None, elem_id=spec.elem_id)
    if spec.kind == "bool":
        return gr.Checkbox(value=value, **common)
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=value, **common)
    if spec.kind in ("int", "float"):
        return gr.Number(
            value=value,
            minimum=spec.minimum,
            maximum=spec.maximum,
            precision=0 if spec.kind == "int" else None,
            step=1 if spec.kind == "int" else _float_step(value),
            **common,
        )
    if spec.kind == "lines":
        return gr.Textbox(value=to_form_value(spec, value), lines=3, max_lines=16, **common)
    return gr.Textbox(value=value, **common)


def _float_step(value: Any) -> float:
    """A spinner step of the value's own order of magnitude (2e-4 steps by 1e-4)."""
    if not value:
        return 0.01
    return 10.0 ** math.floor(math.log10(abs(value)))


@dataclass
class ConfigForm:
    """The rendered form: controls in spec order, so values line up with specs."""

    specs: list[FieldSpec]
    components: list[gr.components.Component] = field(default_factory=list)

    def partial(self, values: Sequence[Any]) -> dict[str, dict[str, Any]]:
        return partial_config(self.specs, values)

    def values(self, config: BaseModel) -> list[Any]:
        return form_values(self.specs, config)


def render_form(config: BaseModel, config_cls: type[BaseModel] = JobConfig) -> ConfigForm:
    """Render one accordion per section, inside the current Blocks, showing config."""
    form = ConfigForm(field_specs(config_cls))
    values = dict(zip((s.path for s in form.specs), form.values(config)))
    sections: dict[str, list[FieldSpec]] = {}
    for spec in form.specs:
        sections.setdefault(spec.section, []).append(spec)
    for section, specs in sections.items():
        with gr.Accordion(section_title(section), open=section in OPEN_SECTIONS, elem_id=f"cfg-{section}"):
            for start in range(0, len(specs), FIELDS_PER_ROW):
                with gr.Row():
                    for spec in specs[start : start + FIELDS_PER_ROW]:
                        form.components.append(component_for(spec, values[spec.path]))
    return form


def bind(fn: Callable[..., Any], *first: Any) -> Callable[..., Any]:
    """fn with its first arguments (the StudioContext, the form) bound. Keeps fn's name,
    which Gradio uses to name the event's endpoint, and the signature of the remaining
    arguments, from which Gradio counts the inputs."""
    bound = functools.partial(fn, *first)
    bound.__name__ = fn.__name__  # type: ignore[attr-defined]
    return bound
