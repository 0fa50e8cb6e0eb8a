"""Engine and sessions. SQLite gets WAL, a busy timeout and foreign keys, so the web app
and worker processes can write the same file at once. PostgreSQL (many hosts) gets a
bounded pool that checks connections before use; engines are reset in forked children."""

from __future__ import annotations

import os
import weakref
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

BUSY_TIMEOUT_MS = 30_000
# PostgreSQL, per process: 5 kept + 10 at a burst covers the web app's threads; a worker
# uses one or two, so dozens of workers fit under the server's default max_connections=100.
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 10
PG_POOL_RECYCLE_S = 1800  # proxies and firewalls drop idle connections after ~1 h
PG_CONNECT_TIMEOUT_S = 10
# SQLite: keep as many connections as the web app runs request threads (anyio's default 40).
# With SQLAlchemy's default 5 kept, 20 raters at once opened and closed a connection, with
# its PRAGMAs, on most requests: a tenth of the web process's time.
SQLITE_POOL_SIZE = 40

_engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for a SQLite or PostgreSQL URL (any other SQLAlchemy URL gets the defaults)."""
    url = with_driver(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=SQLITE_POOL_SIZE,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql"):
        engine = create_engine(
            url,
            pool_pre_ping=True,  # a restarted server or a dropped idle connection is not an error
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_MAX_OVERFLOW,
            pool_recycle=PG_POOL_RECYCLE_S,
            connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "finetune-studio"},
        )
    else:
        engine = create_engine(url, pool_pre_ping=True)
    _engines.add(engine)
    return engine


def with_driver(url: str) -> str:
    """`postgres://` and `postgresql://` mean psycopg 3, the driver the studio ships with
    (SQLAlchemy would otherwise look for psycopg2)."""
    for bare in ("postgres://", "postgresql://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url.removeprefix(bare)
    return url


def _forget_inherited_connections() -> None:
    # A forked child (Celery pool process) must not use its parent's sockets: two
    # processes on one PostgreSQL connection corrupt each other's replies.
    for engine in list(_engines):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    return make_engine(url)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
