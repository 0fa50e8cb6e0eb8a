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
    "tab.admin": "Admin",
    "tab.evaluation": "Evaluation",
    "app.local_mode": (
        "Single-user mode: no login, because the studio only listens on this computer. "
        "Anyone who can use this computer can use the studio. "
        "To require a login, add an admin: studio user add NAME --role admin"
    ),
    "app.signed_in": "Signed in as {name}",
    "app.logout": "Log out",
    # admin tab
    "admin.users_title": "### Users",
    "admin.name": "User name",
    "admin.role": "Role",
    "admin.password": "Password (at least 8 characters)",
    "admin.add": "Add user",
    "admin.added": "Added {name} as {role}. They can log in now.",
    "admin.who": "User name",
    "admin.disable": "Disable",
    "admin.enable": "Enable",
    "admin.new_token": "New API token",
    "admin.disabled": "{name} is disabled and logged out everywhere.",
    "admin.enabled": "{name} can log in again.",
    "admin.token": "API token for {name} (shown only now; copy it): {token}",
    "admin.audit_title": "### Audit log: who did what, and when",
    "admin.refresh": "Refresh",
    "admin.settings_title": "Settings in force",
    "admin.settings_help": (
        "The studio reads these from its environment (or the command line) when it starts; "
        "to change one, restart it with the new value, for example `STUDIO_MAX_UPLOAD_MB=500 studio up`."
    ),
    # rater page
    "rater.none": "No rating work is assigned to you yet. Your trainer will let you know when there is.",
    # datasets tab
    "datasets.upload_title": "### Add a dataset",
    "datasets.file": "Instruction data file (.json, .jsonl, .ndjson, .csv, .tsv or .parquet)",
    "datasets.overrides": "File type and row format (detected automatically)",
    "datasets.file_type": "File type",
    "datasets.auto_type": "from the file name",
    "datasets.schema": "Row format",
    "datasets.schema_info": "alpaca: instruction / input / output; messages: chat turns; sharegpt: conversations.",
    "datasets.auto_schema": "from the first row",
    "datasets.detected": "**Detected:** {type} file, {schema} rows. **Columns:** {columns}",
    "datasets.map.instruction": "Instruction column",
    "datasets.map.input": "Input column (optional)",
    "datasets.map.output": "Output (response) column",
    "datasets.map_none": "(not mapped)",
    "datasets.sample": "First rows, as they will be stored",
    "datasets.inspect_ok": "The file reads cleanly: {rows} rows.",
    "datasets.inspect_problems": "{count} problems ({rows} rows are valid so far):",
    "datasets.inspect_refused": "This file cannot be read yet:",
    "datasets.more_problems": "... and {count} more problems",
    "datasets.name": "Name (optional)",
    "datasets.name_placeholder": "defaults to the file name",
    "datasets.accept_partial": "Keep the valid rows if some are bad",
    "datasets.accept_partial_info": "Otherwise a file with any bad row is refused and nothing is stored.",
    "datasets.add": "Add dataset",
    "datasets.demo": "Load the demo dataset",
    "datasets.demo_name": "demo tasks",
    "datasets.demo_hint": "{rows} small made-up tasks the offline `demo` base model has not seen.",
    "datasets.no_file": "Choose a file first.",
    "datasets.added": "Added dataset '{name}' (id {id}): {rows} rows from {file}.",
    "datasets.skipped": "{count} bad rows were left out:",
    "datasets.refused": "The file was not added. Fix these rows (or tick 'keep the valid rows'):",
    "datasets.list_title": "### Datasets",
    "datasets.preview_select": "Dataset",
    "datasets.choice": "{name} (id {id}, {rows} rows)",
    "datasets.col.id": "id",
    "datasets.col.name": "name",
    "datasets.col.version": "version",
    "datasets.col.rows": "rows",
    "datasets.col.kind": "rows are",
    "datasets.col.file": "file",
    "datasets.col.created": "created",
    "datasets.col.index": "#",
    "datasets.tab.rows": "Rows",
    "datasets.tab.versions": "Versions and export",
    "datasets.tab.quality": "Quality and token preview",
    "datasets.tab.split": "Hold out a validation split",
    "datasets.no_dataset": "No dataset chosen: add one, or pick one above.",
    "datasets.search": "Search",
    "datasets.search_placeholder": "any text in a row; press Enter",
    "datasets.category": "Category",
    "datasets.all_categories": "all categories",
    "datasets.prev": "Previous rows",
    "datasets.next": "Next rows",
    "datasets.page": "**Version {version}** · rows {first}–{last} of {total}",
    "datasets.page_empty": "**Version {version}** · no rows on this page ({total} rows in all).",
    "datasets.page_none_match": "**Version {version}** · no rows match the search and category.",
    "datasets.edit_title": "Edit a row (click a row in the table, or type its #)",
    "datasets.row_index": "Row #",
    "datasets.row_index_info": "The number in the # column.",
    "datasets.load_row": "Show row",
    "datasets.edit_field": "Field",
    "datasets.edit_field_of": "Field of row {index} (version {version})",
    "datasets.edit_value": "Value (chat rows: the messages as JSON)",
    "datasets.edit_row": "The whole row",
    "datasets.save": "Save as a new version",
    "datasets.pick_row": "Pick a row first: click it in the table, or type its # and press Enter.",
    "datasets.no_such_row": "Row {index}: no such row (the newest version has rows 0 to {last}).",
    "datasets.add_row_title": "Add a row",
    "datasets.new.instruction": "Instruction",
    "datasets.new.input": "Input (optional)",
    "datasets.new.output": "Output",
    "datasets.new.extra": "Other fields (optional)",
    "datasets.new.extra_info": "One per line, like `category: geography`.",
    "datasets.new.messages": "Messages (JSON)",
    "datasets.new.messages_info": '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]',
    "datasets.add_row": "Add the row",
    "datasets.bad_extra": "Other fields, line {line}: '{text}' is not 'name: value'.",
    "datasets.bad_messages": "Messages: not valid JSON ({error}).",
    "datasets.delete_title": "Delete rows (Ctrl-click rows in the table to mark them)",
    "datasets.delete_rows": "Rows to delete (# numbers and ranges, or Ctrl-click rows)",
    "datasets.delete": "Delete these rows",
    "datasets.bad_index": "Rows to delete: '{part}' is not a row number or a range like 7-9.",
    "datasets.bad_range": "Rows to delete: '{part}' runs backwards; write the smaller number first.",
    "datasets.too_many_rows": "Rows to delete: at most {limit} rows at once.",
    "datasets.no_indices": "Rows to delete: name at least one row, like '3, 7-9'.",
    "datasets.change_refused": "Nothing was changed:",
    "datasets.saved": "Version {version} saved: {note} ({rows} rows).",
    "datasets.unchanged": "Nothing changed: the rows are the same as version {version}.",
    "datasets.history.version": "version",
    "datasets.history.note": "what changed",
    "datasets.history.rows": "rows",
    "datasets.history.hash": "content hash",
    "datasets.history.created": "created",
    "datasets.history.jobs": "used by jobs",
    "datasets.revert_select": "Go back to",
    "datasets.revert_choice": "version {version}: {note}",
    "datasets.revert": "Go back (as a new version)",
    "datasets.pick_version": "Pick a dataset and the version to go back to.",
    "datasets.export_title": "#### Export the version shown in the Rows tab",
    "datasets.export_format": "Format",
    "datasets.export_info": "CSV cells that a spreadsheet would run as a formula get a leading '.",
    "datasets.export": "Export",
    "datasets.export_file": "Download",
    "datasets.exported": "Exported version {version} as {file}.",
    "datasets.export_refused": "The export failed:",
    "datasets.split_intro": (
        "A split stores in every row whether it is for training or held out for validation; "
        "jobs on that version hold out exactly those rows. It makes a new version of the version shown."
    ),
    "datasets.split_fraction": "Validation share",
    "datasets.split_fraction_info": "0 to 0.9; 0 removes a stored split.",
    "datasets.split_seed": "Seed",
    "datasets.split_by": "Split by column (optional)",
    "datasets.split_by_info": "Its values decide: train, or validation / test / dev.",
    "datasets.split_stratify": "Keep the shares of each value of",
    "datasets.split_stratify_info": "Stratify the random split by this column.",
    "datasets.split_no_column": "(none)",
    "datasets.split_numbers": "Validation share and seed need a number.",
    "datasets.split": "Split",
    "datasets.q.model": "Base model (its tokenizer counts the tokens)",
    "datasets.q.model_info": "A hub id, a local model folder, or 'demo'.",
    "datasets.q.template": "Template",
    "datasets.q.max_length": "Max length (tokens)",
    "datasets.q.run": "Run the quality report",
    "datasets.q.refused": "No report:",
    "datasets.q.run_first": "Run the quality report first.",
    "datasets.max_length_missing": "Max length needs a number.",
    "datasets.q.head": (
        "**Version {version}**: {rows} rows, template {template}, cutoff {max_length} tokens, "
        "tokenizer of {model} ({seconds} s)"
    ),
    "datasets.q.table_head": "| check | rows | details |",
    "datasets.q.exact": "exact duplicates",
    "datasets.q.near": "near duplicates (ignoring case, punctuation, spacing)",
    "datasets.q.empty": "empty responses",
    "datasets.q.short": "very short responses",
    "datasets.q.truncated": "cut at the max length",
    "datasets.q.markers": "template markers inside the data",
    "datasets.q.groups": "{groups} groups",
    "datasets.q.examples": " (e.g. rows {rows})",
    "datasets.q.short_detail": "under {chars} characters",
    "datasets.q.truncated_detail": "{share} of rows; {mean} tokens cut on average, at most {max}; {lost} rows lose every trained token",
    "datasets.q.tokens": "**Tokens:** {total} in all, {trained} trained; per row mean {mean}, median {median}, max {max}.",
    "datasets.q.categories": "**Category balance** ({column}, {count} values): {balance}",
    "datasets.q.no_categories": "No category column, so no category balance.",
    "datasets.q.no_fixes": "No safe fix to offer: no duplicates and no empty responses.",
    "datasets.q.lengths": "Tokens per row",
    "datasets.q.categories_plot": "Rows per category",
    "datasets.fix.drop_duplicates": "Drop exact duplicates (keep the first)",
    "datasets.fix.drop_near_duplicates": "Drop near duplicates (keep the first)",
    "datasets.fix.drop_empty": "Drop rows with an empty response",
    "datasets.tp.title": "#### Token preview: one row as the model sees it",
    "datasets.tp.show": "Show tokens",
    "datasets.tp.pick": "Pick a row (its #) and a max length first.",
    "datasets.tp.refused": "No preview:",
    "datasets.tp.counts": "Row {index}: {tokens} tokens; within the max length {trained} trained, {masked} masked (prompt); {cut} cut (past {max_length}).",
    "datasets.tp.truncated": "This row is longer than the max length: the struck-through tokens are never seen in training.",
    "datasets.tp.nothing": "Nothing of this row is trained: the cut falls before the response.",
    "datasets.tp.legend_trained": "trained (the loss is taken here)",
    "datasets.tp.legend_masked": "masked prompt (seen, not trained)",
    "datasets.tp.legend_cut": "cut (past the max length)",
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
    "train.plan_runs_on": "- workers: {where}",
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
    "jobs.no_worker": "no worker is running to take it (start one with: studio worker)",
    "jobs.attempt": "attempt {attempts} of {max_attempts}",
    "jobs.cancel_pending": "cancel requested",
    "jobs.eta": "about {time} left",
    "jobs.fig.loss": "**step {step}**: loss {loss:.4f}",
    "jobs.fig.lr": "learning rate {lr:.3g}",
    "jobs.fig.grad_norm": "grad norm {norm:.3g}",
    "jobs.fig.tokens": "{rate:,.0f} tokens/s",
    "jobs.fig.eval": "**eval at step {step}**: loss {loss:.4f}, perplexity {ppl:.2f}",
    "jobs.fig.exact_match": "held-out exact match {share:.1%}",
    "jobs.fig.checkpoints": "checkpoints saved (eval loss): {items}",
    "jobs.fig.checkpoint": "step {step}",
    "jobs.fig.final": "final adapter",
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
    # export panel (jobs tab)
    "export.title": "Export",
    "export.help": (
        "Take the model elsewhere. **Merged**: one standard transformers model folder (zip) for transformers "
        "or vLLM. **Adapter**: the small LoRA folder (zip) to load on the base with peft. **GGUF**: one file "
        "for llama.cpp, Ollama or LM Studio, with an Ollama Modelfile. Each export is loaded back and checked "
        "against the studio's own answers before it is offered; the training template travels with it."
    ),
    "export.source": "From",
    "export.final": "Final result",
    "export.checkpoint": "Checkpoint at step {step}",
    "export.kind": "Export as",
    "export.kind.merged": "Merged model",
    "export.kind.adapter": "Adapter",
    "export.kind.gguf": "GGUF",
    "export.quantization": "GGUF precision",
    "export.quantization_info": "F16: exact, twice the size. Q8_0: about half the size, nearly the same answers.",
    "export.start": "Export",
    "export.pick_source": "Pick what to export: the final result (once the job has succeeded) or a checkpoint.",
    "export.queued": "Export #{id} queued: a worker builds and checks it.",
    "export.none": "No exports of this job yet.",
    "export.download": "Download {name}",
    "export.modelfile": "Modelfile (ollama create NAME -f Modelfile)",
    "export.check.model": (
        "Checked in a fresh process: logits within {diff:.1e} of base + adapter (allowed {tolerance:g}), "
        "same greedy answers on {share:.0%} of {n} prompts, template gives the training tokens"
    ),
    "export.check.gguf": "Loaded back: same greedy answers as the merged model on {share:.0%} of {n} prompts",
    "export.check.llama_cpp": "in llama.cpp: {share:.0%}",
    "export.check.metadata": "chat template in the metadata, pre-tokenizer {pre}",
    "export.delete_pick": "Export to delete",
    "export.delete": "Delete export",
    "export.pick_delete": "Pick a finished export to delete.",
    "export.deleted": "Export #{id} deleted.",
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
