"""Shared fixtures: real databases (SQLite files, or PostgreSQL with STUDIO_TEST_DB=postgres:
see tests/databases.py), a tiny model built at test time, a private redis-server, real
worker and web-app processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from itertools import cycle
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from studio.migrate import upgrade
from studio.services.context import StudioContext
from studio.settings import Settings
from tests import databases

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll until check() is truthy; return its value or fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_finished(ctx, job_id: int, processes: "Processes", timeout: float = 240):
    """Wait for a job to reach a final status; on time-out, fail with the process logs."""
    from studio.services import jobs

    def finished():
        job = jobs.get_job(ctx, job_id)
        return job if job.status.finished else None

    try:
        return wait_until(finished, timeout, interval=0.2, what=f"job {job_id} to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{processes.logs()}") from None


def upload_file(ctx, path: Path) -> int:
    """Store a dataset file through the service, returning the dataset id."""
    from studio.services import datasets

    return datasets.create_dataset(ctx, path.name, path.read_bytes())[0].id


# --- models and data ------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama and its tokenizer, built locally and saved like a hub checkpoint."""
    from studio.core.demo import demo_dataset, make_llama, make_tokenizer
    from studio.core.templates import render_prompt

    rows = demo_dataset(300, seed=7)
    corpus = [render_prompt(r) + r["output"] for r in rows]
    tokenizer = make_tokenizer(corpus, vocab_size=400)
    model = make_llama(tokenizer, hidden=32, layers=2, heads=2, intermediate=64, max_positions=256, seed=0)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def alpaca_file(tmp_path_factory) -> Path:
    from studio.core.demo import demo_dataset

    path = tmp_path_factory.mktemp("data") / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in demo_dataset(120, seed=3)))
    return path


# --- settings, DB, broker -------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def model_roots(tmp_path_factory) -> Iterator[Path]:
    """Tests build their models under pytest's temp folder: make it the model root, as an
    operator's STUDIO_MODEL_DIRS would (settings, worker and server processes all read it)."""
    root = tmp_path_factory.getbasetemp().resolve()
    previous = os.environ.get("STUDIO_MODEL_DIRS")
    os.environ["STUDIO_MODEL_DIRS"] = json.dumps([str(root)])
    yield root
    if previous is None:
        os.environ.pop("STUDIO_MODEL_DIRS", None)
    else:
        os.environ["STUDIO_MODEL_DIRS"] = previous


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings on a fresh, migrated DB: a SQLite file in data_dir, or with
    STUDIO_TEST_DB=postgres a PostgreSQL database of its own, dropped after the test
    (after the module or session when made by a fixture of that scope)."""
    if databases.BACKEND == "postgres":
        overrides.setdefault("database_url", databases.create_database())
    # A worker's start-up calibration would compete with the test's own job for the CPU;
    # tests/worker/test_registry.py turns it on.
    overrides.setdefault("worker_calibrate", False)
    settings = Settings(data_dir=data_dir, **overrides)
    upgrade(settings.db_url)
    return settings


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    # autouse, so set up first and torn down last: the test's processes are gone by then
    mark = databases.created_count()
    yield
    databases.drop_created(since=mark)


@pytest.fixture(scope="session", autouse=True)
def _drop_session_databases() -> Iterator[None]:
    yield
    databases.drop_created()


@pytest.fixture
def empty_db_url(tmp_path) -> str:
    """An empty database of the backend under test, not yet migrated."""
    return databases.empty_database_url(tmp_path)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "studio-data")


@pytest.fixture
def ctx(settings) -> StudioContext:
    return StudioContext.from_settings(settings)


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A real Redis the tests own: a private redis-server on a free port (skipped, saying
    why, without the binary), never one that happens to run on the machine. With
    STUDIO_TEST_REDIS_URL set, that Redis instead: its databases 1-15 get flushed."""
    given = os.environ.get("STUDIO_TEST_REDIS_URL")
    if given:
        parts = urlsplit(given)
        base = f"{parts.scheme}://{parts.netloc}"
        if not _redis_answers(base + "/0"):
            pytest.fail(f"STUDIO_TEST_REDIS_URL={given} does not answer")
        yield base
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs the redis-server binary for a private Redis (apt-get install redis-server), "
                    "or STUDIO_TEST_REDIS_URL naming a Redis whose databases 1-15 may be flushed")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    wait_until(lambda: _redis_answers(url + "/0"), 10, what="private redis-server")
    yield url
    proc.terminate()
    proc.wait(10)


_redis_dbs = cycle(range(1, 16))  # each test flushes its database before use


@pytest.fixture
def redis_url(redis_server) -> Iterator[str]:
    """A Redis database of its own for each test, flushed before and after."""
    import redis

    url = f"{redis_server}/{next(_redis_dbs)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


# --- processes ------------------------------------------------------------------------


def studio_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "REDIS_URL"))}
    env.update(settings.as_env())
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    return env


class Processes:
    """Started subprocesses, stopped at teardown (their output goes to log files)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio", *args], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def processes(tmp_path) -> Iterator[Processes]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    procs = Processes(log_dir)
    yield procs
    procs.stop_all()


@pytest.fixture(scope="module")
def module_processes(tmp_path_factory) -> Iterator[Processes]:
    procs = Processes(tmp_path_factory.mktemp("logs"))
    yield procs
    procs.stop_all()


def worker_starter(processes: Processes) -> Callable[..., subprocess.Popen]:
    def start(settings: Settings, name: str = "worker") -> subprocess.Popen:
        return processes.start(["worker", "--name", f"{name}{len(processes.procs)}"], studio_env(settings), name)

    return start


def server_starter(processes: Processes) -> Callable[[Settings], str]:
    """Start `studio serve` on a free port; returns its base URL once /api/health answers."""

    def start(settings: Settings) -> str:
        port = free_port()
        proc = processes.start(["serve", "--port", str(port)], studio_env(settings), "server")
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"studio serve exited early:\n{processes.logs()}")
            try:
                return httpx.get(url + "/api/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 90, interval=0.25, what="studio serve to answer /api/health")
        return url

    return start


@pytest.fixture
def start_worker(processes) -> Callable[..., subprocess.Popen]:
    return worker_starter(processes)


@pytest.fixture
def start_server(processes) -> Callable[[Settings], str]:
    return server_starter(processes)
