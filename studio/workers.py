"""The worker registry: each running worker keeps a row with the device it trains on and
when it last reported (see worker/registry.py), so the studio can tell a user whether any
worker is up and size a job for the machine that will really run it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import delete, select

from studio.core.estimate import GIB, Device
from studio.db import session_scope
from studio.models import WorkerNode, WorkerPublic

MISSED_BEATS = 3  # a worker silent for this many heartbeats counts as gone
FORGET_SECONDS = 24 * 3600  # rows of workers gone this long are deleted


def register(engine: Engine, name: str, device: Device, started_at: datetime) -> None:
    """Insert or refresh this worker's row (every heartbeat: a pruned row comes back)."""
    now = time.time()
    with session_scope(engine) as session:
        session.merge(WorkerNode(name=name, device_json=json.dumps(asdict(device)), started_at=started_at, last_seen=now))
        session.exec(delete(WorkerNode).where(WorkerNode.last_seen < now - FORGET_SECONDS))


def unregister(engine: Engine, name: str) -> None:
    with session_scope(engine) as session:
        session.exec(delete(WorkerNode).where(WorkerNode.name == name))


def list_workers(engine: Engine, heartbeat_seconds: float) -> list[WorkerPublic]:
    """Every known worker, live ones first, newest report first."""
    out = []
    for row, device, silent in _read(engine):
        out.append(WorkerPublic(
            name=row.name, device=device.name, cuda=device.cuda, gpus=device.gpus,
            memory_gib=round(device.memory_bytes / GIB, 1), bf16=device.bf16, bitsandbytes=device.bitsandbytes,
            started_at=row.started_at, seconds_since_seen=round(silent, 1), alive=_alive(silent, heartbeat_seconds),
            training_flops=max(device.flops, 0.0),
        ))
    return sorted(out, key=lambda w: not w.alive)


def live_devices(engine: Engine, heartbeat_seconds: float) -> dict[str, Device]:
    """Worker name -> device, for the workers that reported recently."""
    live = [(row.name, device) for row, device, silent in _read(engine) if _alive(silent, heartbeat_seconds)]
    return dict(sorted(live))


def _read(engine: Engine) -> list[tuple[WorkerNode, Device, float]]:
    """Each row with its device and the seconds since it last reported, newest first."""
    now = time.time()
    with session_scope(engine) as session:
        rows = session.exec(select(WorkerNode).order_by(WorkerNode.last_seen.desc())).all()
    return [(row, Device(**json.loads(row.device_json)), max(0.0, now - row.last_seen)) for row in rows]


def _alive(silent_seconds: float, heartbeat_seconds: float) -> bool:
    return silent_seconds <= MISSED_BEATS * heartbeat_seconds
