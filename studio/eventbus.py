"""The event channel between workers and the studio.

- `db` (one host, the default): a worker writes its events straight into the DB.
- `redis` (remote workers): a worker appends events to a Redis stream; the studio's
  ingester reads them with a consumer group, stores them (idempotently: every row has a
  natural unique key) and only then acknowledges and deletes them. An ingester that dies
  between storing and acknowledging re-reads its pending entries on restart, and storing
  them again is a no-op, so nothing is lost or doubled.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Protocol, Sequence

from sqlalchemy.engine import Engine

from studio.core.events import Event
from studio.ingest import store_events
from studio.settings import Settings

log = logging.getLogger(__name__)

STREAM = "studio:events"
GROUP = "studio-ingest"


class EventSink(Protocol):
    def send(self, events: Sequence[Event]) -> None: ...


class DbSink:
    def __init__(self, engine: Engine):
        self.engine = engine

    def send(self, events: Sequence[Event]) -> None:
        store_events(self.engine, events)


class RedisStreamSink:
    def __init__(self, url: str, stream: str = STREAM):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.stream = stream

    def send(self, events: Sequence[Event]) -> None:
        pipe = self.client.pipeline(transaction=True)  # all of the batch or none of it
        for event in events:
            pipe.xadd(self.stream, {"e": event.model_dump_json()})
        pipe.execute()


def make_sink(settings: Settings, engine: Engine) -> EventSink:
    if settings.event_channel == "redis":
        return RedisStreamSink(settings.events_redis_url)
    return DbSink(engine)


class StreamIngester:
    """Moves events from the Redis stream into the DB until `stop` is set."""

    def __init__(self, url: str, engine: Engine, stream: str = STREAM, consumer: str | None = None):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2)
        self.engine = engine
        self.stream = stream
        self.consumer = consumer or f"ingester@{socket.gethostname()}"
        self.stored = 0

    def _ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self, start: str, block_ms: int | None) -> list[tuple[bytes, dict]]:
        reply = self.client.xreadgroup(GROUP, self.consumer, {self.stream: start}, count=500, block=block_ms)
        return reply[0][1] if reply else []

    def _store(self, entries: list[tuple[bytes, dict]]) -> None:
        events = [Event.model_validate_json(fields[b"e"]) for _id, fields in entries if fields]
        store_events(self.engine, events)
        ids = [entry_id for entry_id, _ in entries]
        self.client.pipeline().xack(self.stream, GROUP, *ids).xdel(self.stream, *ids).execute()
        self.stored += len(events)

    def run(self, stop: threading.Event) -> None:
        pending_first = True
        while not stop.is_set():
            try:
                self._ensure_group()
                # After a restart, first the entries read earlier but never acknowledged.
                entries = self._read("0" if pending_first else ">", None if pending_first else 1000)
                if pending_first and not entries:
                    pending_first = False
                    continue
                if entries:
                    self._store(entries)
            except Exception:  # Redis or the DB briefly away: wait, then re-read pending
                log.warning("event ingest failed; retrying", exc_info=True)
                pending_first = True
                stop.wait(1.0)
