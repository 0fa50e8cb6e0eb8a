"""Honest time: how long a run will take before it starts, a steady ETA while it runs, the
phase it is in (training, evaluating, saving a checkpoint) and a smoothed loss line.

Everything here is a pure function of numbers the DB already holds: metric points (step,
unix time, tokens/s), the eval and checkpoint steps stored so far, and the job's
schedule (eval every N steps, save every M). No gradio, no DB.

Why step gaps and not tokens/s alone for the ETA: the worker's tokens/s since the last
step includes any evaluation run in between, so one eval pause makes a rate based on it
jump (the ETA went 1,169 -> 91 -> 222 min in a minute). Gaps that hold an evaluation or
a save are set apart and counted once per remaining evaluation instead.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

RECENT_GAPS = 40  # step gaps the running step time is the median of
PAUSE_FACTOR = 3.0  # a gap this many times the median step time holds a pause
MIN_PAUSE_SECONDS = 1.5  # shorter silences are just a slow step
SMOOTHING = 0.9  # weight of the past in the smoothed loss line (an EMA, bias-corrected)


@dataclass(frozen=True)
class Schedule:
    """When a job evaluates and saves, from its frozen config."""

    total_steps: int
    sample_every: int
    save_every: int
    evaluates: bool = True  # False: no held-out rows and no probes, so evals are quick


@dataclass(frozen=True)
class TrainPoint:
    step: int
    recorded_at: float  # unix seconds
    tokens_per_second: float | None = None


@dataclass(frozen=True)
class Pace:
    """What a run's own points say about its speed."""

    step_seconds: float | None  # median seconds per step, pauses left out
    eval_seconds: float | None  # median length of an evaluation pause
    tokens_per_second: float | None  # median of the steps' own rates, pauses left out


def pace(points: Sequence[TrainPoint], eval_steps: Sequence[int] = ()) -> Pace:
    """Median step time and eval pause from the newest RECENT_GAPS gaps between train
    points (the step-rate median ignores the rare slow step), and the median tokens/s of
    the steps that held no pause."""
    ordered = sorted(points, key=lambda p: p.step)
    gaps: list[tuple[float, bool]] = []  # (seconds per step, held an evaluation)
    evals = set(eval_steps)
    rates = []
    for before, after in zip(ordered, ordered[1:]):
        steps = after.step - before.step
        if steps <= 0:
            continue
        # eval S runs after step S trains and before it is reported; the base model's
        # (step 0) just after step 1 is reported
        held_eval = any(before.step < s <= after.step for s in evals) or (0 in evals and before.step == 1)
        gaps.append(((after.recorded_at - before.recorded_at) / steps, held_eval))
    plain = [g for g, held in gaps if not held]
    step_seconds = statistics.median(plain[-RECENT_GAPS:]) if plain else None
    if step_seconds is None and gaps:
        step_seconds = min(g for g, _ in gaps)
    pauses = []
    if step_seconds is not None:
        threshold = max(PAUSE_FACTOR * step_seconds, step_seconds + MIN_PAUSE_SECONDS)
        pauses = [g - step_seconds for g, held in gaps if held and g > threshold]
        for (g, held), after in zip(gaps, ordered[1:]):
            if not held and g <= threshold and after.tokens_per_second:
                rates.append(after.tokens_per_second)
    return Pace(
        step_seconds=step_seconds,
        eval_seconds=statistics.median(pauses) if pauses else None,
        tokens_per_second=statistics.median(rates) if rates else None,
    )


def evals_after(step: int, schedule: Schedule) -> int:
    """Evaluations still to come after `step`: one every sample_every steps before the
    end, and the final one."""
    if schedule.total_steps <= step:
        return 0
    every = max(schedule.sample_every, 1)
    between = (schedule.total_steps - 1) // every - step // every
    return max(between, 0) + 1


def eta_seconds(
    points: Sequence[TrainPoint], eval_steps: Sequence[int], schedule: Schedule, now: float
) -> float | None:
    """Seconds left: remaining steps at the median step time, plus the remaining
    evaluations at their measured length, less the time already spent on the current
    step or pause. None until two steps have been seen."""
    if len(points) < 2 or schedule.total_steps <= 0:
        return None
    run = pace(points, eval_steps)
    if run.step_seconds is None:
        return None
    last = max(points, key=lambda p: p.step)
    left = (schedule.total_steps - last.step) * run.step_seconds
    if schedule.evaluates and run.eval_seconds is not None:
        left += evals_after(last.step, schedule) * run.eval_seconds
    # Count down between points instead of standing still; never below one step.
    left -= max(0.0, now - last.recorded_at)
    return max(left, run.step_seconds if last.step < schedule.total_steps else 0.0)


def phase(
    last_train_step: int | None,
    silent_seconds: float,
    step_seconds: float | None,
    eval_steps: Sequence[int],
    checkpoint_steps: Sequence[int],
    schedule: Schedule,
    final_saved: bool = False,
) -> str:
    """What a running job is doing now: 'preparing', 'training', 'evaluating',
    'evaluating_base', 'saving' or 'finishing' (the final model is saved; the worker is
    wrapping up).

    The worker evaluates at step S (S a multiple of sample_every, and at the end) before
    it reports step S, and saves a checkpoint at S after reporting it; so a silence after
    step S-1 or S that is longer than a step says which of the two is running."""
    if last_train_step is None:
        return "preparing"
    expected = step_seconds if step_seconds is not None else 1.0
    if silent_seconds < max(PAUSE_FACTOR * expected, expected + MIN_PAUSE_SECONDS):
        return "training"
    evals, saves = set(eval_steps), set(checkpoint_steps)
    every, total = max(schedule.sample_every, 1), schedule.total_steps
    if last_train_step >= 1 and 0 not in evals and schedule.evaluates:
        return "evaluating_base"  # the base model's evaluation runs just after step 1
    upcoming = last_train_step + 1
    if schedule.evaluates and upcoming % every == 0 and upcoming < total and upcoming not in evals:
        return "evaluating"
    if total and last_train_step >= total:
        if schedule.evaluates and total not in evals:
            return "evaluating"
        return "finishing" if final_saved else "saving"
    if schedule.save_every and last_train_step % schedule.save_every == 0 and last_train_step not in saves:
        return "saving"
    return "training"


@dataclass(frozen=True)
class Estimate:
    """A run time before launch: a range in seconds and what it rests on."""

    low: float
    high: float
    basis: str  # 'measured' (finished runs on this device) or 'rough'
    rate: float  # tokens/s the range is centred on
    detail: str = ""


def estimate_run(
    train_tokens: float,
    evals: int,
    rates: Sequence[float],
    eval_seconds: Sequence[float] = (),
    startup_seconds: Sequence[float] = (),
    rough_rate: float | None = None,
    rough_fixed_seconds: float = 0.0,
) -> Estimate | None:
    """Run time for train_tokens non-padding tokens and `evals` evaluations.

    rates, eval_seconds, startup_seconds: what finished runs like this one measured (one
    value per run). The range spans their slowest and fastest, widened by 15% (the load on
    a shared machine varies that much). With no finished run, rough_rate gives a range of
    half to twice its time (plus rough_fixed_seconds: start-up, evaluations, per-step
    overhead), labelled rough; with neither, None."""
    if rates:
        fast, slow = max(rates), min(rates)
        pause = statistics.median(eval_seconds) if eval_seconds else 0.0
        start = statistics.median(startup_seconds) if startup_seconds else 0.0
        fixed = evals * pause + start
        low = (train_tokens / fast + fixed) * 0.85
        high = (train_tokens / slow + fixed) * 1.15
        return Estimate(low, high, "measured", statistics.median(rates), f"{len(rates)} finished run(s)")
    if rough_rate:
        middle = train_tokens / rough_rate
        return Estimate(middle / 2 + rough_fixed_seconds, middle * 2 + 2 * rough_fixed_seconds, "rough", rough_rate)
    return None


def format_duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '2 h 10 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def smoothed(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """An exponential moving average with bias correction (TensorBoard's smoothing): the
    first values are not pulled towards zero."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i) if weight < 1 else value)
    return out


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
