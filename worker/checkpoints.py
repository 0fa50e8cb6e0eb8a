"""Resumable checkpoints: HF Trainer checkpoint folders (adapter or model weights,
optimizer, scheduler, RNG states, trainer state incl. the data position) that count only
once a marker file says they were written whole. A folder without the marker is what a
crash mid-write leaves behind, and is never resumed from."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from studio.core.datasets import write_atomic

COMPLETE_MARKER = "studio_complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def _by_step(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def mark_complete(checkpoint: Path, step: int, eval_loss: float | None) -> None:
    """Called after the Trainer has finished writing `checkpoint`."""
    payload = json.dumps({"step": step, "eval_loss": eval_loss}).encode()
    write_atomic(checkpoint / COMPLETE_MARKER, payload)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / COMPLETE_MARKER).is_file()


def is_last_step(checkpoint: Path) -> bool:
    """Whether the checkpoint was saved at the run's last step (its trainer state says)."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def last_complete(folder: Path) -> Path | None:
    complete = [p for _, p in _by_step(folder) if is_complete(p)]
    return complete[-1] if complete else None


def prepare_resume(folder: Path) -> Path | None:
    """The newest complete checkpoint, after deleting partial ones newer than it (they
    would otherwise be mistaken for progress or block a re-save at the same step)."""
    resume = last_complete(folder)
    resume_step = int(_NAME.match(resume.name).group(1)) if resume else -1
    for step, path in _by_step(folder):
        if step > resume_step and not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)
    return resume


def prune(folder: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints; returns those deleted."""
    complete = [p for _, p in _by_step(folder) if is_complete(p)]
    doomed = complete[:-keep_last] if keep_last > 0 else complete
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
