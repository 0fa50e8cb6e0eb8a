"""The running job's link to the studio: events out (batched into the DB), lease renewal
and the cancel flag in, and the Trainer callback that connects both to training."""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from sqlalchemy.engine import Engine
from transformers import TrainerCallback

from studio import lifecycle
from studio.core.config import JobConfig
from studio.core.events import Event, EventKind
from studio.core.paths import JobPaths
from studio.eventbus import EventSink
from worker import checkpoints

log = logging.getLogger(__name__)


class EventWriter:
    """Collects events and sends them in batches from a background thread, so a training
    step never waits on the DB or Redis; the dashboard sees them within `interval`
    seconds. A batch that cannot be sent is kept and retried, never dropped."""

    def __init__(self, sink: EventSink, interval: float = 0.25, close_timeout: float = 120.0):
        self._sink = sink
        self._interval = interval
        self._close_timeout = close_timeout
        self._queue: queue.Queue[Event] = queue.Queue()
        self._pending: list[Event] = []
        self._closed = threading.Event()
        self._wake = threading.Event()
        self.put_count = 0
        self.sent = 0
        self._thread = threading.Thread(target=self._loop, name="event-writer", daemon=True)
        self._thread.start()

    def put(self, event: Event) -> None:
        self.put_count += 1
        self._queue.put(event)

    def drain(self, timeout: float) -> bool:
        """Send everything put so far now and wait until it is stored; False if that did
        not happen within timeout seconds (the sink is down)."""
        target = self.put_count
        deadline = time.monotonic() + timeout
        while self.sent < target:
            if time.monotonic() > deadline or self._closed.is_set():
                return False
            self._wake.set()
            time.sleep(0.01)
        return True

    def _flush(self) -> None:
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if self._pending:
            self._sink.send(self._pending)
            self.sent += len(self._pending)
            self._pending = []

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._closed.is_set():
                return  # close() sends the rest
            try:
                self._flush()
            except Exception:  # DB locked or Redis restarting: keep the batch, retry
                log.warning("sending events failed; will retry", exc_info=True)

    def close(self) -> None:
        """Send everything left, retrying for up to close_timeout seconds."""
        self._closed.set()
        self._wake.set()
        self._thread.join()
        deadline = time.monotonic() + self._close_timeout
        while True:
            try:
                self._flush()
                return
            except Exception:
                if time.monotonic() > deadline:
                    log.error("gave up sending %d events", len(self._pending) + self._queue.qsize())
                    raise
                time.sleep(0.5)


@dataclass
class JobRun:
    """One attempt at running a job, as the recipe sees it."""

    job_id: int
    owner: str
    attempt: int
    config: JobConfig
    paths: JobPaths
    snapshot: Any  # Path of the dataset snapshot
    engine: Engine
    lease_seconds: float
    writer: EventWriter | None  # None on the non-primary processes of a multi-GPU job
    primary: bool = True  # the process that reports; in a multi-GPU job, rank 0
    log_scope: str = ""  # keeps log keys apart when two processes log for one attempt
    stop: threading.Event = field(default_factory=threading.Event)
    lease_lost: bool = False
    model_access: Any = None  # studio.core.basemodels.ModelAccess; None: this process's settings
    prepare_deadline: float = math.inf  # time.monotonic() by which data and model must be ready
    prepare_timeout: float = math.inf  # the setting behind the deadline, for the message
    preparing: bool = False  # the recipe is preparing data or loading the model
    prepare_expired: bool = False  # the heartbeat stopped the preparation at its deadline
    _log_counter: Any = field(default_factory=lambda: itertools.count(1))

    def emit(self, kind: EventKind, step: int = 0, **data: Any) -> None:
        if not self.primary:
            return
        self.writer.put(Event(job_id=self.job_id, kind=kind, step=step, data=data))

    def log(self, message: str, level: str = "info") -> None:
        key = f"{self.attempt}:{self.log_scope}{next(self._log_counter)}"
        self.emit(EventKind.log, key=key, level=level, message=message)

    def progress(self, step: int, total_steps: int) -> None:
        if not self.primary:
            return
        lifecycle.set_progress(self.engine, self.job_id, self.owner, step, total_steps)


class Heartbeat:
    """Renews the lease every third of it and polls the cancel flag every second; either
    ending sets `run.stop` so training halts at the next step. A preparation past its
    deadline is stopped the same way (a slow template stops mid-row)."""

    def __init__(self, run: JobRun, poll_seconds: float = 1.0):
        self._run = run
        self._poll = poll_seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        run = self._run
        next_renew = time.monotonic() + run.lease_seconds / 3
        while not self._done.wait(self._poll):
            try:
                if lifecycle.cancel_requested(run.engine, run.job_id):
                    run.stop.set()
                if run.preparing and time.monotonic() > run.prepare_deadline:
                    run.prepare_expired = True
                    run.stop.set()
                if time.monotonic() >= next_renew:
                    next_renew = time.monotonic() + run.lease_seconds / 3
                    if not lifecycle.renew_lease(run.engine, run.job_id, run.owner, run.lease_seconds):
                        run.lease_lost = True
                        run.stop.set()
            except Exception:  # keep beating through a transient DB error
                log.exception("heartbeat failed; retrying")


PROGRESS_SECONDS = 1.0
DRAIN_SECONDS = 120.0


class TrainingDiverged(Exception):
    """The loss stopped being a finite number; the message is worded for the user."""


class Evaluate(Protocol):
    """Records an evaluation at `step`; `base=True`: of the base model (adapter off)."""

    def __call__(self, step: int, base: bool = False) -> None: ...


class StudioCallback(TrainerCallback):
    """Streams per-step metrics, runs evaluation every `sample_every` steps, and stops
    training when the job is cancelled or its lease is lost.

    The step-0 evaluation is the base model's. An adapter starts as a no-op, so with
    `base_later` it is run with the adapter switched off just after the first step is
    reported: the loss curve starts without waiting for it."""

    def __init__(self, run: JobRun, evaluate: Evaluate, base_later: bool = False):
        self.run = run
        self.evaluate = evaluate
        self.base_later = base_later
        self._base_pending = False
        self._tokens_at: tuple[int, float] = (0, time.perf_counter())  # (tokens seen, when)
        self._progress_at = float("-inf")  # the first step is shown at once

    def on_train_begin(self, args, state, control, **kwargs):
        self.run.progress(state.global_step, state.max_steps)
        if state.global_step == 0:
            if self.base_later:
                self._base_pending = True
            else:
                self._evaluate(0)
        self.run.log(f"training started at step {state.global_step} of {state.max_steps}")
        self._tokens_at = (state.num_input_tokens_seen or 0, time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        if not math.isfinite(float(logs["loss"])):
            raise TrainingDiverged(self._diverged(float(logs["loss"]), state.global_step, args.fp16))
        tokens, now = state.num_input_tokens_seen or 0, time.perf_counter()
        seen_before, before = self._tokens_at
        self._tokens_at = (tokens, now)
        self.run.emit(
            EventKind.train_metrics,
            step=state.global_step,
            loss=float(logs["loss"]),
            learning_rate=_maybe_float(logs.get("learning_rate")),
            grad_norm=_maybe_float(logs.get("grad_norm")),
            epoch=_maybe_float(logs.get("epoch")),
            # non-padding tokens per second since the last step (evaluation time included)
            tokens_per_second=(tokens - seen_before) / (now - before) if tokens > seen_before else None,
        )
        self._evaluate_base()

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step % self.run.config.training.sample_every == 0 and step < state.max_steps:
            self._evaluate(step)
        now = time.monotonic()
        if now - self._progress_at >= PROGRESS_SECONDS or step == state.max_steps:
            self._progress_at = now  # at most one DB write a second, however fast steps are
            self.run.progress(step, state.max_steps)
        if self.run.stop.is_set():
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        """The Trainer has written checkpoint-<step> whole: mark it resumable, record it,
        then prune older ones."""
        if args.world_size > 1:
            torch.distributed.barrier()  # every process has written its part (RNG states)
        if not self.run.primary:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        # A resume from this checkpoint never re-emits the steps before it: they must be
        # stored before it counts, or a crash right after it loses them for good.
        if not self.run.writer.drain(DRAIN_SECONDS):
            self.run.log(f"warning: events not stored in {DRAIN_SECONDS} s; checkpoint {state.global_step} not resumable")
            return
        eval_loss = getattr(self.evaluate, "last_eval_loss", None)
        checkpoints.mark_complete(folder, state.global_step, eval_loss)
        self.run.emit(EventKind.checkpoint, step=state.global_step, path=self.run.paths.relative(folder), eval_loss=eval_loss)
        checkpoints.prune(folder.parent, self.run.config.training.keep_last)

    def on_train_end(self, args, state, control, **kwargs):
        self.run.progress(state.global_step, state.max_steps)
        self._evaluate_base()
        if not self.run.stop.is_set():
            self._evaluate(state.global_step)

    def _diverged(self, loss: float, step: int, fp16: bool) -> str:
        t = self.run.config.training
        return (
            f"Training diverged: the loss became {loss} at step {step}, and the weights with it. "
            f"Lower training.learning_rate (now {t.learning_rate:g}) or lengthen the warmup "
            f"(training.warmup_ratio, now {t.warmup_ratio:g})"
            + (", or train in bf16 or fp32 instead of fp16" if fp16 else "")
            + ", then clone the job."
        )

    def _evaluate_base(self) -> None:
        if self._base_pending:
            self._base_pending = False
            self._evaluate(0, base=True)

    def _evaluate(self, step: int, base: bool = False) -> None:
        # In a multi-GPU job only rank 0 evaluates; the others wait for it at the next
        # gradient sync.
        if self.run.primary:
            self.evaluate(step, base=base)


def _maybe_float(value: Any) -> float | None:
    return None if value is None else float(value)
