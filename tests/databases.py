"""The tests' databases: a SQLite file in the test's folder by default or, with
STUDIO_TEST_DB=postgres, a PostgreSQL database of the test's own, created empty and
dropped after it.

The server is the machine's at 127.0.0.1:5432 when it answers (trust auth); there only
databases named `studio_test_<pid>_...` are ever created or dropped. Where nothing
answers, a private cluster is started from the PostgreSQL binaries in a temp folder on a
free port and removed at exit. With neither, the tests that need a database skip, saying
what is missing.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
import pytest

BACKEND = os.environ.get("STUDIO_TEST_DB") or "sqlite"
if BACKEND not in ("sqlite", "postgres"):
    raise pytest.UsageError(f"STUDIO_TEST_DB={BACKEND!r}: use 'sqlite' (the default) or 'postgres'")

PREFIX = "studio_test_"
MACHINE_HOST, MACHINE_PORT = "127.0.0.1", 5432
_OURS = re.compile(rf"^{PREFIX}(\d+)_\d+_[0-9a-f]+$")


class Missing(Exception):
    """No PostgreSQL can be used here; the message says what is missing."""


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    private: bool

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def admin(self):
        """An autocommit connection to the `postgres` database (CREATE/DROP DATABASE
        cannot run in a transaction)."""
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True, connect_timeout=3
        )

    def describe(self) -> str:
        kind = "a private cluster" if self.private else "the machine's server"
        return f"PostgreSQL at {self.host}:{self.port} ({kind}, user {self.user})"


_server: PostgresServer | None = None
_problem: str | None = None
_created: list[str] = []
_counter = itertools.count(1)


def server() -> PostgresServer:
    """The PostgreSQL the tests use, found or started once per session. Skips the
    calling test, saying what is missing, when there is none."""
    global _server, _problem
    if _server is None and _problem is None:
        try:
            _server = _find()
            if _server is None:
                _server, stop = _start_private()
                atexit.register(stop)
            _drop_leftovers(_server)
        except Missing as exc:
            _problem = f"STUDIO_TEST_DB=postgres: {exc}"
    if _server is None:
        pytest.skip(_problem)
    return _server


def _find() -> PostgresServer | None:
    try:
        import psycopg
    except ImportError:
        raise Missing("psycopg is not installed (pip install 'psycopg[binary]')") from None
    for user in dict.fromkeys(filter(None, (os.environ.get("PGUSER"), "postgres", psutil.Process().username()))):
        candidate = PostgresServer(MACHINE_HOST, MACHINE_PORT, user, private=False)
        try:
            with candidate.admin() as conn:
                # creating databases is all we need: superuser or CREATEDB
                allowed = conn.execute(
                    "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
                ).fetchone()[0]
        except psycopg.Error:
            continue
        if allowed:
            return candidate
    return None


def _bin_dir() -> Path:
    on_path = shutil.which("initdb")
    candidates = ([str(Path(on_path).parent)] if on_path else []) + sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    raise Missing(
        f"nothing answers at {MACHINE_HOST}:{MACHINE_PORT} and no initdb/pg_ctl binaries were found "
        "(on PATH or in /usr/lib/postgresql/*/bin): apt-get install postgresql"
    )


def _start_private() -> tuple[PostgresServer, Callable[[], None]]:
    """A throwaway cluster in a temp folder on a free port, and the function that stops
    and removes it."""
    from tests.conftest import free_port

    bin_dir = _bin_dir()
    workdir = Path(tempfile.mkdtemp(prefix="studio-test-pg-"))
    run_as = None
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise Missing(
                f"nothing answers at {MACHINE_HOST}:{MACHINE_PORT}, and initdb refuses root while "
                "there is no 'postgres' user to run it as"
            ) from None
        os.chown(workdir, account.pw_uid, account.pw_gid)
        run_as = "postgres"
    data, port = workdir / "data", free_port()
    # a throwaway cluster: durability settings off, only a loopback TCP port and a socket in workdir
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    try:
        subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            user=run_as, cwd=workdir, check=True, capture_output=True, text=True, timeout=120,
        )
        subprocess.run(
            [bin_dir / "pg_ctl", "-D", data, "-l", workdir / "server.log", "-o", options, "-w", "-t", "60", "start"],
            user=run_as, cwd=workdir, check=True, capture_output=True, text=True, timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (workdir / "server.log").read_text(errors="replace")[-2000:] if (workdir / "server.log").exists() else ""
        shutil.rmtree(workdir, ignore_errors=True)
        raise Missing(f"could not start a private PostgreSQL from {bin_dir}: {exc} {getattr(exc, 'stderr', '')} {log}") from None

    def stop() -> None:
        subprocess.run([bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], user=run_as, cwd="/",
                       capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)

    return PostgresServer("127.0.0.1", port, "postgres", private=True), stop


def _drop_leftovers(srv: PostgresServer) -> None:
    """Drop studio_test_* databases of test runs on this host that were killed before
    their teardown (their pid is gone); nothing else is ever touched."""
    with srv.admin() as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'studio\\_test\\_%'")]
    for name in names:
        found = _OURS.match(name)
        if found and not psutil.pid_exists(int(found.group(1))):
            _drop(srv, name)


def create_database() -> str:
    """A new, empty PostgreSQL database for the running test; returns its URL."""
    from psycopg import sql

    srv = server()
    name = f"{PREFIX}{os.getpid()}_{next(_counter)}_{secrets.token_hex(3)}"
    with srv.admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    _created.append(name)
    return srv.url(name)


def created_count() -> int:
    """How many databases this session has made so far (a mark for drop_created)."""
    return len(_created)


def drop_created(since: int = 0) -> None:
    """Drop the databases made after `since`: those of one test, or all at the end."""
    if _server is None:
        return
    for name in _created[since:]:
        _drop(_server, name)
    del _created[since:]


def _drop(srv: PostgresServer, name: str) -> None:
    from psycopg import sql

    from studio.db import engine_for

    assert _OURS.match(name), f"refusing to drop {name!r}: not a test database"
    engine_for(srv.url(name)).dispose()  # our own pooled connections first; FORCE ends the rest
    with srv.admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def empty_database_url(folder: Path) -> str:
    """An empty database of the backend under test, not yet migrated."""
    return create_database() if BACKEND == "postgres" else f"sqlite:///{folder / 'studio.db'}"
