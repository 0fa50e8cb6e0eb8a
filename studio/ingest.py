"""Store worker events in the DB, idempotently: each row has a natural unique key
(job, step, ...), and a replayed event hits it and is skipped."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from studio.core.events import Event, EventKind
from studio.db import session_scope
from studio.models import Checkpoint, JobLog, MetricPoint, Sample, utcnow

_METRIC_FIELDS = ("loss", "learning_rate", "grad_norm", "exact_match", "tokens_per_second", "epoch")


def _insert_ignore(session, table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    session.execute(insert(table).on_conflict_do_nothing(), rows)


def _rows_for(event: Event) -> tuple[Any, list[dict[str, Any]]] | None:
    data = event.data
    if event.kind in (EventKind.train_metrics, EventKind.eval_metrics):
        split = "train" if event.kind == EventKind.train_metrics else "eval"
        row = {"job_id": event.job_id, "split": split, "step": event.step, "recorded_at": event.ts}
        row.update({name: data.get(name) for name in _METRIC_FIELDS})
        return MetricPoint, [row]
    if event.kind == EventKind.sample:
        return Sample, [
            {
                "job_id": event.job_id,
                "step": event.step,
                "probe_index": int(data["probe_index"]),
                "prompt": data["prompt"],
                "output": data["output"],
                "reference": data.get("reference"),
            }
        ]
    if event.kind == EventKind.checkpoint:
        return Checkpoint, [
            {
                "job_id": event.job_id,
                "step": event.step,
                "path": data["path"],
                "eval_loss": data.get("eval_loss"),
                "final": bool(data.get("final", False)),
                "created_at": utcnow(),
            }
        ]
    if event.kind == EventKind.log:
        return JobLog, [
            {
                "job_id": event.job_id,
                "key": data["key"],
                "level": data.get("level", "info"),
                "message": data["message"],
                "created_at": datetime.fromtimestamp(event.ts, timezone.utc),
            }
        ]
    return None


def store_events(engine: Engine, events: Iterable[Event]) -> None:
    """Write a batch of events in one transaction."""
    by_table: dict[Any, list[dict[str, Any]]] = {}
    for event in events:
        rows = _rows_for(event)
        if rows is not None:
            by_table.setdefault(rows[0], []).extend(rows[1])
    if not by_table:
        return
    with session_scope(engine) as session:
        for table, rows in by_table.items():
            _insert_ignore(session, table.__table__, rows)
