"""The training recipe: read it top to bottom in `run`.

setup (seed, tokenizer, data, model) -> train with the HF Trainer, streaming metrics and
probe generations -> save a standard PEFT adapter folder (or a full model folder).

Resume: a requeued job continues from its newest *complete* checkpoint, which restores
the adapter (or model) weights, optimizer, LR scheduler, RNG states and the position in
the data (the Trainer skips the batches already seen in the current epoch).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import platform
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.tensorboard import SummaryWriter
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback

from studio.core.basemodels import check_base_model, resolve_base_model
from studio.core.config import AdapterSection, DataSection, JobConfig, ModelSection, TrainingSection
from studio.core.datasets import read_snapshot, stored_split
from studio.core.estimate import detect_device, find_target_modules, resolve_optim, resolve_precision
from studio.core.events import EventKind
from studio.core.metrics import mean_exact_match
from studio.core.templates import (
    IGNORE_INDEX,
    TemplateError,
    encode_prompt,
    encode_rows,
    finish_reply,
    mix_general_text,
    reference_text,
    stop_renders_when,
    render_prompt,
)
from worker import checkpoints, fused_loss
from worker.callbacks import JobRun, StudioCallback
from worker.generation import generate
from worker.packing import PackedCollator, pack_steps, padding_share

_log = logging.getLogger(__name__)

EVAL_ROWS = 256  # cap on held-out rows scored for eval loss: evaluation stays cheap


def run(job: JobRun) -> str:
    """Train the job to the end; returns 'succeeded', or 'cancelled' when stopped."""
    cfg = job.config
    job.preparing = True
    try:
        check_model(job)
        set_seed(cfg.training.seed)
        tokenizer = load_tokenizer(cfg.model)
        data = prepare_data(job, tokenizer)
        check_preparing(job)
        model = load_model(cfg.model, cfg.adapter, job.log)
        check_preparing(job)
        job.preparing = False
    except Stopped:
        job.log("stopped before training: " + ("the lease was lost" if job.lease_lost else "cancelled by the user"))
        return "cancelled"
    job.log(f"model ready: {count_trainable(model)}")
    trainer = build_trainer(model, tokenizer, data, job)
    resume = checkpoints.prepare_resume(job.paths.checkpoints)
    if resume is not None:
        job.log(f"resuming from {job.paths.relative(resume)}")
    if resume is not None and checkpoints.is_last_step(resume):
        finish_from(trainer, resume)
    else:
        with freed_memory_kept(job.log):
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if not job.primary:
        return "succeeded"  # rank 0 of a multi-GPU job saves the result
    if job.stop.is_set():
        job.log("stopped: " + ("the lease was lost" if job.lease_lost else "cancelled by the user"))
        return "cancelled"
    save_final(trainer, tokenizer, job)
    return "succeeded"


# glibc's mallopt parameters and the defaults they go back to
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _glibc():
    if platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def freed_memory_kept(log: Callable[[str], None]):
    """While training, memory a step frees stays with the process for the next step.

    glibc serves allocations over 32 MB (a 4k-token step's MLP activations are 38 MB each)
    with mmap and hands them back at free, so every step faulted its activations in anew:
    ~1.2 GB, 300k page faults a step, and a 4k-token step ran 13% slower per token than a
    1k one (bench/train_throughput.py). Inside, the heap serves everything and is never
    trimmed; afterwards the defaults come back and the free memory is returned."""
    libc = _glibc()
    if libc is None:
        log("memory: the allocator is not glibc's; freed step memory is left to it")
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, -1)
    log("memory: a step's freed memory is kept for the next step (glibc: no mmap, no trim)")
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


class SetupError(Exception):
    """A problem with the job's inputs (model, data, settings), worded for the user."""


class Stopped(Exception):
    """The job was cancelled (or lost its lease) while it was being prepared."""


def check_model(job: JobRun) -> None:
    """The studio checked the base model at launch; check again here, before any
    from_pretrained, against this worker's own settings (model roots, remote code)."""
    model = job.config.model
    problem = check_base_model(model.base_model, job.model_access, model.trust_remote_code)
    if problem:
        raise SetupError(problem)


def check_preparing(job: JobRun) -> None:
    """Between preparation steps: honour a cancel, and give up past the preparation limit."""
    if job.prepare_expired or time.monotonic() > job.prepare_deadline:
        raise SetupError(
            f"Preparing the data and the model took longer than {job.prepare_timeout:g} s "
            "(STUDIO_PREPARE_TIMEOUT_SECONDS); use fewer rows, a simpler template, or raise the limit"
        )
    if job.stop.is_set():
        raise Stopped()


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
    """The split stored with the dataset (rows marked 'validation'), else a seeded train /
    held-out split; at least one training row always remains."""
    stored = stored_split(rows)
    if stored is not None:
        return stored
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
    mixed = mix_general_text(train_rows, cfg.template.general_text_share, cfg.training.seed)
    train, dropped = _encode_all(tokenizer, mixed, job)
    held_out, _ = _encode_all(tokenizer, held_rows[:EVAL_ROWS], job)
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


PREP_CHUNK = 128  # rows encoded between checks of the cancel flag and the time limit


def _encode_all(tokenizer, rows: list[dict], job: JobRun) -> tuple[list[dict], int]:
    cfg = job.config
    encoded, dropped = [], 0
    for start in range(0, len(rows), PREP_CHUNK):
        check_preparing(job)
        chunk = rows[start : start + PREP_CHUNK]
        try:
            with stop_renders_when(job.stop):  # a cancel stops a slow custom template mid-row
                examples = encode_rows(tokenizer, chunk, cfg.training.max_length, cfg.template)
        except TemplateError as exc:
            check_preparing(job)  # a cancel, not the template's fault
            raise SetupError(f"template: {exc}") from None
        for example in examples:
            if example is None:
                dropped += 1
                continue
            encoded.append(
                {"input_ids": example.input_ids, "attention_mask": [1] * len(example.input_ids), "labels": example.labels}
            )
    return encoded, dropped


def load_model(model_cfg: ModelSection, adapter_cfg: AdapterSection, log: Callable[[str], None] = _log.info):
    """The base model (4-bit NF4 for qlora, 8-bit for lora8bit) wrapped with LoRA
    adapters, or the plain model for full fine-tuning."""
    quantization = _quantization_config(adapter_cfg, log)
    # A quantized base is placed at load; under torchrun each rank takes its own GPU.
    gpu = int(os.environ.get("LOCAL_RANK", "0"))
    placement = {"device_map": {"": gpu if torch.cuda.is_available() else "cpu"}} if quantization else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve_base_model(model_cfg.base_model),
            trust_remote_code=model_cfg.trust_remote_code,
            dtype=torch.float32 if not torch.cuda.is_available() else "auto",
            quantization_config=quantization,
            **placement,
        )
    except Exception as exc:
        raise _load_failed("weights", model_cfg, exc) from exc
    if adapter_cfg.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantization is not None:
        _keep_4bit_gradients(model)
        # Norms and embeddings to fp32 for stable training; checkpointing is the Trainer's call.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = _target_modules(model, adapter_cfg)
    log(f"adapters ({adapter_cfg.method}, r={adapter_cfg.r}) on: {', '.join(targets)}")
    lora = LoraConfig(
        r=adapter_cfg.r,
        lora_alpha=adapter_cfg.alpha,
        lora_dropout=adapter_cfg.dropout,
        target_modules=targets,
        use_dora=adapter_cfg.use_dora,
        use_rslora=adapter_cfg.use_rslora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _quantization_config(adapter_cfg: AdapterSection, log: Callable[[str], None]):
    """bitsandbytes settings for qlora / lora8bit; None for the unquantized methods."""
    if adapter_cfg.method not in ("qlora", "lora8bit"):
        return None
    label = "QLoRA" if adapter_cfg.method == "qlora" else "8-bit LoRA"
    if importlib.util.find_spec("bitsandbytes") is None:  # the optional `gpu` extra
        raise SetupError(f"{label} needs the bitsandbytes package on the worker: pip install 'finetune-studio[gpu]'")
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        log(f"warning: {label} needs a CUDA GPU to be fast; this worker has none, so it runs on the CPU, slowly")
    if adapter_cfg.method == "lora8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if torch.cuda.is_available():
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        compute = torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def _keep_4bit_gradients(model) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights for a faster kernel at
    the first no-grad forward (a probe generation, an eval pass); training after that
    silently loses the gradient through the frozen base. Keep the plain kernel."""
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _target_modules(model, adapter_cfg: AdapterSection) -> list[str]:
    """The user's layer names (each must exist), or every linear layer but the head."""
    if not adapter_cfg.target_modules:
        return find_target_modules(model)
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in adapter_cfg.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise SetupError(
            f"adapter.target_modules: no layer named {', '.join(missing)} in this model; "
            f"its linear layers are: {', '.join(find_target_modules(model))}"
        )
    return list(adapter_cfg.target_modules)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as the values they hold."""
    trainable = total = 0
    for p in model.parameters():
        quant_state = getattr(p, "quant_state", None)
        n = quant_state.shape.numel() if quant_state is not None else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def count_trainable(model) -> str:
    trainable, total = count_parameters(model)
    return f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"


def build_trainer(model, tokenizer, data: PreparedData, job: JobRun) -> Trainer:
    """The HF Trainer for this job, with the studio's callbacks (events, evaluation,
    cancel, checkpoints) and TensorBoard. With packing, the Trainer's items are whole
    steps of packed sequences, so its step count (LR schedule, total steps, ETA) is the real one."""
    t = job.config.training
    # Training never reads a KV cache, and packed rows need it off: with a cache the
    # mask ignores position_ids and packed rows silently attend to each other.
    model.config.use_cache = False
    if t.gradient_checkpointing and hasattr(model, "peft_config"):
        model.enable_input_require_grads()  # frozen embeddings: checkpointed layers still get grads
    train = data.train
    if t.packing:
        train = pack_steps(data.train, t.max_length, t.sequences_per_step, t.seed)
        bins = [b for step in train for b in step]
        fill = sum(len(b["input_ids"]) for b in bins) / (len(bins) * t.max_length)
        job.log(
            f"packing: {len(data.train)} rows into {len(bins)} sequences of <= {t.max_length} tokens "
            f"({fill:.1%} full), {t.sequences_per_step} per step ({t.step_tokens:,} tokens), "
            f"{padding_share(train):.1%} padding"
        )
    attention = getattr(model.config, "_attn_implementation", None) or "default"
    args = training_arguments(t, str(job.paths.checkpoints), job.log, attention)
    fits, why = fused_loss.applies(model) if t.fused_loss else (False, "training.fused_loss is off")
    head = fused_loss.output_layer(model) if fits else None
    job.log(f"loss: cross-entropy fused with the output layer, {fused_loss.chunk_tokens(head.out_features)} "
            "tokens a chunk, response tokens only" if fits else f"loss: the model's own ({why})")
    job.log(COMPILE_NOTE_CUDA if torch.cuda.is_available() else COMPILE_NOTE_CPU)
    trainer = StudioTrainer(model=model, args=args, train_dataset=train, data_collator=make_collator(tokenizer, t),
                            head=head)
    evaluator = Evaluator(trainer, tokenizer, data, job)
    # a fresh LoRA adapter is a no-op (B = 0), so the base model is the model with it off
    trainer.add_callback(StudioCallback(job, evaluator, base_later=hasattr(model, "peft_config")))
    trainer.add_callback(TensorBoardCallback(SummaryWriter(log_dir=str(job.paths.tensorboard))))
    return trainer


# torch.compile stays off until bench/compile.py shows it pays on the device: on 2 CPU
# cores a compiled step was 0.95-1.02x an eager one, after 20-70 s of compiling.
COMPILE_NOTE_CPU = "torch.compile: off (on a CPU it did not pay: 0.95-1.02x a step after 20-70 s of compiling)"
COMPILE_NOTE_CUDA = "torch.compile: off (not yet measured on a GPU; bench/compile.py measures it)"


class StudioTrainer(Trainer):
    """The HF Trainer, with the training loss fused with the output layer when `head` is
    given (worker.fused_loss); evaluation keeps the model's own loss."""

    def __init__(self, *args, head: torch.nn.Linear | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.head = head
        if head is not None:
            self.loss_is_scaled_for_ga = True  # compute_loss divides by the tokens of the whole update

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.head is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs, total, count = fused_loss.forward_loss(model, self.head, inputs)
        if num_items_in_batch is None:  # the mean of this batch, as a share of the update
            loss = total / max(count, 1) / self.current_gradient_accumulation_steps
        else:
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices:  # the count is of every rank's tokens
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


def training_arguments(
    t: TrainingSection, output_dir: str, log: Callable[[str], None], attention: str = "default"
) -> TrainingArguments:
    """TrainingArguments from the job's settings, with precision and optimizer resolved
    for this worker's device (fallbacks are logged, never silent)."""
    device = detect_device()
    precision, precision_note = resolve_precision(t, device)
    optim, optim_note = resolve_optim(t, device)
    for note in filter(None, [precision_note, optim_note]):
        log("warning: " + note)
    log(
        f"training on {device.name} in {precision}, {attention} attention, optimizer {optim}"
        + (", packed rows" if t.packing else "")
        + (", length-grouped batches" if t.group_by_length and not t.packing else "")
        + (", gradient checkpointing" if t.gradient_checkpointing else "")
    )
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=1 if t.packing else t.batch_size,  # packed: an item is a whole step
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a share of the steps
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=optim,
        bf16=precision == "bf16",  # on a CPU: bf16 autocast, the weights stay fp32
        fp16=precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing,  # the 5.x name of gradient checkpointing
        # Packed steps are length-grouped by pack_steps, not by the sampler: with the grouped
        # sampler a job resumed after a crash no longer continued the same loss curve.
        train_sampling_strategy="group_by_length" if t.group_by_length and not t.packing else "random",
        seed=t.seed,
        logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN loss must reach StudioCallback, which fails the job
        save_strategy="steps" if t.save_every else "no",
        save_steps=t.save_every or 500,
        save_total_limit=None,  # the studio prunes, never before a newer one is complete
        eval_strategy="no",  # the studio callback evaluates, so eval and probes share a step
        report_to="none",  # TensorBoard is added by build_trainer, writing into the job's folder
        # Packed batches have no attention mask to find their padding by; it is a few
        # percent (bench/train_throughput.py), so it is counted as seen.
        include_num_input_tokens_seen="all" if t.packing else "non_padding",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,  # multi-GPU jobs: every adapted layer is used each step
    )


def make_collator(tokenizer, training: TrainingSection):
    """Steps of packed sequences (worker.packing: bins of rows whose positions restart
    per row), or batches of encoded rows padded to the longest row of the batch."""
    if training.packing:
        return PackedCollator(tokenizer.pad_token_id)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


class Evaluator:
    """Held-out loss plus greedy generations for the probes, recorded as one eval point."""

    def __init__(self, trainer: Trainer, tokenizer, data: PreparedData, job: JobRun):
        self.trainer, self.tokenizer, self.data, self.job = trainer, tokenizer, data, job
        self.template = job.config.template
        self.prompts = [encode_prompt(tokenizer, row, self.template) for row in data.probes]
        training = job.config.training
        # held-out rows batched as training batches them: steps of packed rows, or padded rows
        if training.packing:
            self.held_out = pack_steps(data.held_out, training.max_length, training.sequences_per_step, training.seed)
        else:
            self.held_out = data.held_out
        self.eval_batch = 1 if training.packing else training.batch_size
        self.last_eval_loss: float | None = None

    def __call__(self, step: int, base: bool = False) -> None:
        with self.trainer.model.disable_adapter() if base else contextlib.nullcontext():
            self._record(step)

    def _record(self, step: int) -> None:
        model = self.trainer.model
        eval_loss = self._eval_loss(model) if self.data.held_out else None
        self.last_eval_loss = eval_loss
        outputs = generate(model, self.tokenizer, self.prompts, self.job.config.training.max_new_tokens)
        outputs = [finish_reply(output, self.template) for output in outputs]
        references = [reference_text(row) for row in self.data.probes]
        scored = [(out, ref) for out, ref in zip(outputs, references) if ref is not None]
        shown = self.job.config.data.probe_count or len(outputs)
        for index, (row, output) in enumerate(zip(self.data.probes[:shown], outputs)):
            self.job.emit(
                EventKind.sample,
                step=step,
                probe_index=index,
                prompt=render_prompt(row, self.template, self.tokenizer),
                output=output,
                reference=references[index],
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
        size = self.eval_batch
        for start in range(0, len(self.held_out), size):
            batch = collator(self.held_out[start : start + size])
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**batch).loss) * n
            tokens += n
        model.train(was_training)
        return total / max(tokens, 1)


def finish_from(trainer: Trainer, checkpoint: Path) -> None:
    """The attempt before died after saving the last step: load that checkpoint and end
    training as the Trainer does (final evaluation), without training. (Resuming through
    trainer.train at the last step would train one step past the end.)"""
    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    trainer.control = trainer.callback_handler.on_train_end(trainer.args, trainer.state, trainer.control)


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
