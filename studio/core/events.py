"""Typed events a worker emits about a job. On one host they go straight into the DB;
with remote workers they travel over an event channel and the studio ingests them.
Each event has a key unique within its job, so storing a replayed event is a no-op."""

from __future__ import annotations

import enum
import time
from typing import Any

from pydantic import BaseModel, Field


class EventKind(str, enum.Enum):
    status = "status"
    progress = "progress"
    train_metrics = "train_metrics"
    eval_metrics = "eval_metrics"
    sample = "sample"
    checkpoint = "checkpoint"
    log = "log"


class Event(BaseModel):
    job_id: int
    kind: EventKind
    step: int = 0
    data: dict[str, Any] = Field(default_factory=dict)
    ts: float = Field(default_factory=time.time)
