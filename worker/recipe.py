"""The training recipe: read it top to bottom in `run`.

setup (seed, tokenizer, data, model) -> train with the HF Trainer, streaming metrics and
probe generations -> save a standard PEFT adapter folder (or a full model folder).

Resume: a requeued job continues from its newest *complete* checkpoint, which restores
the adapter (or model) weights, optimizer, LR scheduler, RNG states and the position in
the data (the Trainer skips the batches already seen in the current epoch).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass

import torch
from torch.utils.tensorboard import SummaryWriter
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback

from studio.core.basemodels import resolve_base_model
from studio.core.config import AdapterSection, DataSection, JobConfig, ModelSection
from studio.core.datasets import read_snapshot
from studio.core.events import EventKind
from studio.core.metrics import mean_exact_match
from studio.core.templates import IGNORE_INDEX, Encoded, encode_example, encode_prompt, render_prompt
from worker import checkpoints
from worker.callbacks import JobRun, StudioCallback
from worker.generation import generate

EVAL_ROWS = 256  # cap on held-out rows scored for eval loss: evaluation stays cheap


def run(job: JobRun) -> str:
    """Train the job to the end; returns 'succeeded', or 'cancelled' when stopped."""
    cfg = job.config
    set_seed(cfg.training.seed)
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(job, tokenizer)
    model = load_model(cfg.model, cfg.adapter)
    job.log(f"model ready: {count_trainable(model)}")
    trainer = build_trainer(model, tokenizer, data, job)
    resume = checkpoints.prepare_resume(job.paths.checkpoints)
    if resume is not None:
        job.log(f"resuming from {job.paths.relative(resume)}")
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if job.stop.is_set():
        job.log("stopped: " + ("the lease was lost" if job.lease_lost else "cancelled by the user"))
        return "cancelled"
    save_final(trainer, tokenizer, job)
    return "succeeded"


class SetupError(Exception):
    """A problem with the job's inputs (model, data, settings), worded for the user."""


def _load_failed(what: str, model_cfg: ModelSection, exc: Exception) -> SetupError:
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    return SetupError(
        f"Could not load the {what} of base model '{model_cfg.base_model}' ({type(exc).__name__}: {detail}). "
        "Check the hub id or folder; without internet use a local model folder or 'demo'."
    )


def load_tokenizer(model_cfg: ModelSection):
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_base_model(model_cfg.base_model), trust_remote_code=model_cfg.trust_remote_code
        )
    except Exception as exc:
        raise _load_failed("tokenizer", model_cfg, exc) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # only pads: labels there are masked
    return tokenizer


@dataclass
class PreparedData:
    train: list[dict]
    held_out: list[dict]  # encoded rows for eval loss
    probes: list[dict]  # rows whose generations are scored and shown
    dropped: int


def split_rows(rows: list[dict], data_cfg: DataSection, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded train / held-out split; at least one training row always remains."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_held = min(int(round(len(rows) * data_cfg.validation_fraction)), len(rows) - 1)
    held = [rows[i] for i in order[:n_held]]
    train = [rows[i] for i in order[n_held:]]
    return train, held


def prepare_data(job: JobRun, tokenizer) -> PreparedData:
    cfg = job.config
    rows = read_snapshot(job.snapshot)
    train_rows, held_rows = split_rows(rows, cfg.data, cfg.training.seed)
    train, dropped = _encode_all(tokenizer, train_rows, cfg)
    held_out, _ = _encode_all(tokenizer, held_rows[:EVAL_ROWS], cfg)
    if not train:
        raise SetupError(
            f"No training row fits in max_length={cfg.training.max_length} tokens: raise training.max_length"
        )
    if cfg.data.probe_prompts:
        probes = [{"instruction": p, "input": "", "output": None} for p in cfg.data.probe_prompts]
    else:
        wanted = max(cfg.data.exact_match_rows, cfg.data.probe_count)
        probes = held_rows[:wanted] if held_rows else train_rows[: cfg.data.probe_count]
    job.log(
        f"data: {len(train)} training rows, {len(held_out)} held out, {len(probes)} probes"
        + (f", {dropped} rows dropped (prompt longer than max_length)" if dropped else "")
    )
    return PreparedData(train, held_out, probes, dropped)


def _encode_all(tokenizer, rows: list[dict], cfg: JobConfig) -> tuple[list[dict], int]:
    encoded, dropped = [], 0
    for row in rows:
        example: Encoded | None = encode_example(
            tokenizer, row, cfg.training.max_length, train_on_prompt=cfg.template.train_on_prompt
        )
        if example is None:
            dropped += 1
            continue
        encoded.append(
            {"input_ids": example.input_ids, "attention_mask": [1] * len(example.input_ids), "labels": example.labels}
        )
    return encoded, dropped


def load_model(model_cfg: ModelSection, adapter_cfg: AdapterSection):
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve_base_model(model_cfg.base_model),
            trust_remote_code=model_cfg.trust_remote_code,
            dtype=torch.float32 if not torch.cuda.is_available() else "auto",
        )
    except Exception as exc:
        raise _load_failed("weights", model_cfg, exc) from exc
    if adapter_cfg.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=adapter_cfg.r,
        lora_alpha=adapter_cfg.alpha,
        lora_dropout=adapter_cfg.dropout,
        target_modules=list(adapter_cfg.target_modules) or "all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def count_trainable(model) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"


def build_trainer(model, tokenizer, data: PreparedData, job: JobRun) -> Trainer:
    t = job.config.training
    use_bf16 = t.precision == "bf16" or (
        t.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    )
    args = TrainingArguments(
        output_dir=str(job.paths.checkpoints),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a share of the steps
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=use_bf16,
        fp16=t.precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
        seed=t.seed,
        logging_steps=1,
        save_strategy="steps" if t.save_every else "no",
        save_steps=t.save_every or 500,
        save_total_limit=None,  # the studio prunes, never before a newer one is complete
        eval_strategy="no",  # the studio callback evaluates, so eval and probes share a step
        report_to="none",  # TensorBoard is added below, writing into the job's folder
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    trainer = Trainer(model=model, args=args, train_dataset=data.train, data_collator=collator)
    evaluator = Evaluator(trainer, tokenizer, data, job)
    trainer.add_callback(StudioCallback(job, evaluator))
    trainer.add_callback(TensorBoardCallback(SummaryWriter(log_dir=str(job.paths.tensorboard))))
    return trainer


class Evaluator:
    """Held-out loss plus greedy generations for the probes, recorded as one eval point."""

    def __init__(self, trainer: Trainer, tokenizer, data: PreparedData, job: JobRun):
        self.trainer, self.tokenizer, self.data, self.job = trainer, tokenizer, data, job
        self.prompts = [encode_prompt(tokenizer, row) for row in data.probes]
        self.last_eval_loss: float | None = None

    def __call__(self, step: int) -> None:
        model = self.trainer.model
        eval_loss = self._eval_loss(model) if self.data.held_out else None
        self.last_eval_loss = eval_loss
        outputs = generate(model, self.tokenizer, self.prompts, self.job.config.training.max_new_tokens)
        scored = [(out, row["output"]) for out, row in zip(outputs, self.data.probes) if row["output"] is not None]
        shown = self.job.config.data.probe_count or len(outputs)
        for index, (row, output) in enumerate(zip(self.data.probes[:shown], outputs)):
            self.job.emit(
                EventKind.sample,
                step=step,
                probe_index=index,
                prompt=render_prompt(row),
                output=output,
                reference=row["output"],
            )
        self.job.emit(
            EventKind.eval_metrics,
            step=step,
            loss=eval_loss,
            exact_match=mean_exact_match(scored) if scored else None,
        )

    @torch.no_grad()
    def _eval_loss(self, model) -> float:
        was_training = model.training
        model.eval()
        collator = self.trainer.data_collator
        device = next(model.parameters()).device
        total, tokens = 0.0, 0
        size = self.job.config.training.batch_size
        for start in range(0, len(self.data.held_out), size):
            batch = collator(self.data.held_out[start : start + size])
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**batch).loss) * n
            tokens += n
        model.train(was_training)
        return total / max(tokens, 1)


def save_final(trainer: Trainer, tokenizer, job: JobRun) -> None:
    """Write the adapter (or model) folder whole, then swap it into place."""
    final = job.paths.final
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    trainer.model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "studio_job.json").write_text(
        json.dumps({"job_id": job.job_id, "config": job.config.model_dump(mode="json")}, indent=2)
    )
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    step = trainer.state.global_step
    job.emit(EventKind.checkpoint, step=step, path=job.paths.relative(final), final=True)
    job.log(f"saved {job.paths.relative(final)}")
