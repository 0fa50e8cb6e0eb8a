"""Every string the UI shows, in one place (English), and how messages are rendered.

Why not gr.I18n: in Gradio 6.31 its keys are translated in the browser only where a
component takes an I18nData (labels, info, placeholders), and only when the I18n object
is handed to mount_gradio_app. Most of our text is built in handlers with values in it
("Job 3 queued", "rows 21-40"), which I18nData cannot format, so the strings would be
split between two mechanisms. A plain dict here keeps them together; a second language
is a second dict with the same keys.
"""

from __future__ import annotations

import html
from typing import Iterable

TEXT: dict[str, str] = {
    # page
    "app.title": "Fine-tuning studio",
    "app.header": (
        "## Fine-tuning studio\n"
        "Bring instruction data, pick a base model, launch a fine-tune and watch it learn. "
        "**1.** Add a dataset  **2.** Train  **3.** Watch the job."
    ),
    "tab.datasets": "Datasets",
    "tab.train": "Train",
    "tab.jobs": "Jobs",
    # datasets tab
    "datasets.upload_title": "### Add a dataset",
    "datasets.file": "Instruction data file (.json, .jsonl, .csv or .tsv)",
    "datasets.name": "Name (optional)",
    "datasets.name_placeholder": "defaults to the file name",
    "datasets.accept_partial": "Keep the valid rows if some are bad",
    "datasets.accept_partial_info": "Otherwise a file with any bad row is refused and nothing is stored.",
    "datasets.add": "Add dataset",
    "datasets.demo": "Load the demo dataset",
    "datasets.demo_name": "demo tasks",
    "datasets.demo_hint": "1,000 small made-up tasks the offline `demo` base model has not seen.",
    "datasets.list_title": "### Datasets",
    "datasets.preview_title": "### Preview",
    "datasets.preview_select": "Dataset to preview",
    "datasets.prev": "Previous rows",
    "datasets.next": "Next rows",
    "datasets.page": "Rows {first}-{last}",
    "datasets.page_empty": "No rows to show.",
    "datasets.no_file": "Choose a file first.",
    "datasets.added": "Added dataset '{name}' (id {id}): {rows} rows from {file}.",
    "datasets.skipped": "{count} bad rows were left out:",
    "datasets.refused": "The file was not added. Fix these rows (or tick 'keep the valid rows'):",
    "datasets.choice": "{name} (id {id}, {rows} rows)",
    "datasets.col.id": "id",
    "datasets.col.name": "name",
    "datasets.col.rows": "rows",
    "datasets.col.file": "file",
    "datasets.col.created": "created",
    # train tab
    "train.dataset": "Dataset",
    "train.dataset_info": "Add datasets in the Datasets tab.",
    "train.base_model": "Base model",
    "train.base_model_info": "A Hugging Face hub id (org/name), a local model folder, or 'demo' (the offline demo model).",
    "train.preset": "Preset",
    "train.preset_info": "Choosing a preset fills in the settings below; you can still change them.",
    "train.preset_none": "Defaults (no preset)",
    "train.job_name": "Job name (optional)",
    "train.job_name_placeholder": "defaults to '<dataset> on <model>'",
    "train.settings_title": "### Settings",
    "train.launch": "Launch training",
    "train.no_dataset": "Choose a dataset first (add one in the Datasets tab).",
    "train.refused": "The job was not started. Fix these settings:",
    "train.launched": "Job {id} queued. Opening the Jobs tab...",
    "train.plan_title": "### Before you launch",
    "train.plan_no_dataset": "Choose a dataset to see the size of this run.",
    "train.plan_invalid": "These settings cannot start a job yet:",
    "train.plan_params": "- **{trainable:,}** trainable of {total:,} parameters ({share:.2f}%)",
    "train.plan_memory": "- about **{gib:.2f} GiB** of memory to train in {precision} (a rough upper estimate)",
    "train.plan_steps": "- {rows:,} training rows, **{steps:,} steps**",
    "train.plan_warning": "- ⚠️ {text}",
    # jobs tab
    "jobs.list_title": "### Jobs",
    "jobs.select": "Job",
    "jobs.select_info": "Pick a job, or click a row in the table.",
    "jobs.choice": "{id}: {name}",
    "jobs.cancel": "Cancel job",
    "jobs.clone": "Run again (clone)",
    "jobs.cancelled": "Cancel requested for job {id}; it stops at the next training step.",
    "jobs.cloned": "Job {id} queued as a copy of job {source}.",
    "jobs.none": "No job selected. Launch one in the Train tab.",
    "jobs.step": "step {step} / {total}",
    "jobs.step_unknown": "waiting to start",
    "jobs.attempt": "attempt {attempts} of {max_attempts}",
    "jobs.cancel_pending": "cancel requested",
    "jobs.error": "What went wrong:",
    "jobs.plot_title": "Loss and held-out exact match",
    "jobs.plot_empty": "No metrics yet: they appear once training starts.",
    "jobs.trace.train_loss": "train loss",
    "jobs.trace.eval_loss": "eval loss",
    "jobs.trace.exact_match": "held-out exact match",
    "jobs.axis.step": "step",
    "jobs.axis.loss": "loss",
    "jobs.axis.exact_match": "exact match",
    "jobs.samples_title": "### Sample generations",
    "jobs.logs": "Log",
    "jobs.config": "Settings of this job",
    "jobs.col.id": "id",
    "jobs.col.name": "name",
    "jobs.col.base_model": "base model",
    "jobs.col.status": "status",
    "jobs.col.progress": "step / total",
    "jobs.col.created": "created",
    "jobs.col.step": "step",
    "jobs.col.prompt": "prompt",
    "jobs.col.output": "output",
    "jobs.col.reference": "reference",
    # config form: section titles and field labels (fields without one are named from
    # their attribute name, so a new JobConfig field needs no entry here)
    "section.model": "Model",
    "section.data": "Data",
    "section.template": "Prompt template",
    "section.adapter": "Adapter (LoRA or full)",
    "section.training": "Training",
    "field.model.trust_remote_code": "Trust remote code",
    "field.data.probe_prompts": "Probe prompts (one per line)",
    "field.data.exact_match_rows": "Exact-match rows",
    "field.template.name": "Template",
    "field.adapter.r": "LoRA rank (r)",
    "field.adapter.alpha": "LoRA alpha",
    "field.adapter.dropout": "LoRA dropout",
    "field.adapter.target_modules": "Target modules (one per line)",
    "field.training.max_steps": "Max steps",
    "field.training.grad_accum": "Gradient accumulation",
    "field.training.max_length": "Max length (tokens)",
    "field.training.max_grad_norm": "Max gradient norm",
    "field.training.sample_every": "Sample and evaluate every (steps)",
    "field.training.max_new_tokens": "Max new tokens (samples)",
}

STATUS_COLOURS = {
    "queued": "#6b7280",
    "running": "#2563eb",
    "succeeded": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#a16207",
}


def t(key: str, **values: object) -> str:
    """The text for key, with {placeholders} filled from values."""
    return TEXT[key].format(**values) if values else TEXT[key]


def section_title(section: str) -> str:
    return TEXT.get(f"section.{section}", section.replace("_", " ").capitalize())


def field_label(path: str) -> str:
    """'training.learning_rate' -> 'Learning rate', unless TEXT names it."""
    return TEXT.get(f"field.{path}", path.rsplit(".", 1)[-1].replace("_", " ").capitalize())


def notice(kind: str, title: str, lines: Iterable[str] = ()) -> str:
    """A message box (kind: 'ok' or 'error') as HTML, every piece escaped."""
    colour, background = {"ok": ("#166534", "#f0fdf4"), "error": ("#991b1b", "#fef2f2")}[kind]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    body = f"<ul style='margin:.3em 0 0 1.2em;padding:0'>{items}</ul>" if items else ""
    return (
        f"<div class='notice notice-{kind}' style='border-left:4px solid {colour};background:{background};"
        f"color:{colour};padding:.6em .9em;border-radius:4px'><strong>{html.escape(title)}</strong>{body}</div>"
    )
