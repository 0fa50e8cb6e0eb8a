"""Honest time: the ETA leaves evaluation pauses out of the step rate, the phase names
what a silent job is doing, and the pre-launch range rests on what finished runs measured."""

from __future__ import annotations

from studio.core.timing import (
    Schedule,
    TrainPoint,
    estimate_run,
    eta_seconds,
    evals_after,
    format_duration,
    pace,
    phase,
    smoothed,
)

SCHEDULE = Schedule(total_steps=100, sample_every=20, save_every=50)


def run(until: int, step_seconds: float = 0.5, eval_seconds: float = 30.0, every: int = 20):
    """Train points of a run that pauses eval_seconds before reporting each eval step."""
    points, now, evals = [], 1000.0, [0]
    for step in range(1, until + 1):
        now += step_seconds
        if step % every == 0:
            now += eval_seconds
            evals.append(step)
        points.append(TrainPoint(step, now, 1000.0))
    return points, evals, now


def test_eta_is_steady_across_an_eval_pause():
    before, evals, now = run(39)
    after, evals_after_pause, later = run(41)
    eta_before = eta_seconds(before, evals, SCHEDULE, now)
    eta_after = eta_seconds(after, evals_after_pause, SCHEDULE, later)
    # before: 61 steps x 0.5 s + evals at 40, 60, 80, 100 x 30 s; after: the pause at 40 is behind
    assert abs(eta_before - (61 * 0.5 + 4 * 30)) < 1.0
    assert abs(eta_after - (59 * 0.5 + 3 * 30)) < 1.0
    assert pace(after, evals_after_pause).step_seconds == 0.5


def test_eta_counts_down_between_points_but_not_below_a_step():
    points, evals, now = run(30)
    assert eta_seconds(points, evals, SCHEDULE, now + 10) < eta_seconds(points, evals, SCHEDULE, now)
    assert eta_seconds(points, evals, SCHEDULE, now + 10_000) == 0.5
    assert eta_seconds(points[:1], evals, SCHEDULE, now) is None


def test_evals_after_counts_the_remaining_and_the_final_one():
    assert evals_after(0, SCHEDULE) == 5  # 20, 40, 60, 80 and the final at 100
    assert evals_after(79, SCHEDULE) == 2
    assert evals_after(100, SCHEDULE) == 0


def test_phase_names_what_a_silent_job_is_doing():
    quiet = dict(step_seconds=0.5, checkpoint_steps=[], schedule=SCHEDULE)
    assert phase(None, 0.0, None, [], [], SCHEDULE) == "preparing"
    assert phase(19, 0.2, eval_steps=[0], **quiet) == "training"
    assert phase(19, 20.0, eval_steps=[0], **quiet) == "evaluating"  # eval 20 runs before step 20 is reported
    assert phase(1, 20.0, eval_steps=[], **quiet) == "evaluating_base"
    assert phase(50, 20.0, eval_steps=[0, 20, 40], **quiet) == "saving"  # saved after step 50 is reported
    assert phase(50, 20.0, 0.5, [0, 20, 40], [50], SCHEDULE) == "training"
    assert phase(100, 20.0, eval_steps=[0, 20, 40, 60, 80], **quiet) == "evaluating"  # the final eval
    assert phase(100, 20.0, 0.5, [0, 20, 40, 60, 80, 100], [50], SCHEDULE) == "saving"
    assert phase(100, 20.0, 0.5, [0, 20, 40, 60, 80, 100], [50], SCHEDULE, final_saved=True) == "finishing"


def test_estimate_spans_the_runs_measured_and_labels_a_rough_one():
    measured = estimate_run(100_000, evals=4, rates=[1000.0, 800.0], eval_seconds=[10.0], startup_seconds=[5.0])
    assert measured.basis == "measured"
    assert measured.low == (100 + 45) * 0.85 and measured.high == (125 + 45) * 1.15
    rough = estimate_run(100_000, evals=4, rates=[], rough_rate=1000.0, rough_fixed_seconds=10.0)
    assert rough.basis == "rough" and rough.low == 60.0 and rough.high == 220.0
    assert estimate_run(100_000, evals=4, rates=[]) is None


def test_durations_and_smoothing_read_well():
    assert [format_duration(s) for s in (45, 185, 7800)] == ["45 s", "3 min 05 s", "2 h 10 min"]
    line = smoothed([2.0, 2.0, 1.0, 1.0])
    assert line[0] == 2.0 and 1.0 < line[-1] < 2.0
