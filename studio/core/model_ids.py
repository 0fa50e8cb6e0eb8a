"""Model ids (DESIGN.md seam 5), shared by chat, /v1, evaluation and exports:

- ``job-N``: job N's final result (its ``final`` folder);
- ``job-N/checkpoint-S``: the complete checkpoint of job N at step S;
- anything else: a base model as a job names it (``demo``, a hub id, an allowed folder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from studio.core.paths import JobPaths

_JOB_ID = re.compile(r"^job-(\d{1,18})(?:/checkpoint-(\d{1,18}))?$")


@dataclass(frozen=True)
class ModelId:
    """A parsed model id: a base (job_id None) or something a job trained."""

    base: Optional[str] = None
    job_id: Optional[int] = None
    step: Optional[int] = None  # None with a job: the final result

    @property
    def is_base(self) -> bool:
        return self.job_id is None

    def __str__(self) -> str:
        return format_model_id(self.job_id, self.step) if self.job_id is not None else str(self.base)

    def folder(self, artifacts_root: Path) -> Path:
        """Where the weights of a trained id lie under the artifact root."""
        if self.job_id is None:
            raise ValueError("a base model has no folder under the artifact root")
        paths = JobPaths(artifacts_root, self.job_id)
        return paths.final if self.step is None else paths.checkpoints / f"checkpoint-{self.step}"


def parse_model_id(value: str) -> ModelId:
    """`job-3` -> final result of job 3, `job-3/checkpoint-120` -> that checkpoint; a string
    that starts with 'job-' but is neither is refused (ValueError), anything else is a base."""
    text = value.strip()
    match = _JOB_ID.match(text)
    if match:
        return ModelId(job_id=int(match.group(1)), step=int(match.group(2)) if match.group(2) else None)
    if text.startswith("job-"):
        raise ValueError(f"'{text[:80]}' is not a model id: use job-N or job-N/checkpoint-S")
    if not text:
        raise ValueError("the model id is empty")
    return ModelId(base=text)


def format_model_id(job_id: int, step: Optional[int] = None) -> str:
    """The id of job_id's final result (step None) or of its checkpoint at step."""
    return f"job-{job_id}" + (f"/checkpoint-{step}" if step is not None else "")
