"""The `studio` command as users and docker-compose run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import psutil
import pytest
import yaml

from studio.__main__ import app as cli
from studio.settings import Settings
from tests.conftest import ROOT, free_port, wait_until


def test_migrate_creates_the_database(tmp_path):
    env = {**os.environ, "STUDIO_DATA_DIR": str(tmp_path / "d")}
    out = subprocess.run([sys.executable, "-m", "studio", "migrate"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "d" / "studio.db").is_file()


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    settings = Settings()
    assert settings.celery_broker_url == "redis://redis:6379/0"
    assert settings.db_url == f"sqlite:///{tmp_path.resolve() / 'studio.db'}"
    monkeypatch.delenv("REDIS_URL")
    assert Settings().celery_broker_url == "filesystem://"
    assert Settings(broker_url="redis://x:1/2").celery_broker_url == "redis://x:1/2"


def test_compose_runs_real_commands_with_known_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    commands = {c.name or c.callback.__name__ for c in cli.registered_commands}
    known_env = {f"STUDIO_{name.upper()}" for name in Settings.model_fields} | {"REDIS_URL"}
    for name in ("studio", "worker"):
        service = services[name]
        assert service["command"][0] == "studio" and service["command"][1] in commands
        assert set(service["environment"]) <= known_env
        assert "studio-data:/data" in service["volumes"]
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    assert "redis" in services and (ROOT / "Dockerfile").is_file()


def test_compose_puts_studio_and_workers_on_one_postgres():
    """Studio and workers may run on different hosts, so they share a PostgreSQL service:
    the URL they get names that service's user, database and port, with the driver the
    studio ships (psycopg 3), and they start only once pg_isready says it is up."""
    from sqlalchemy.engine import make_url

    from studio.db import make_engine

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for name in ("studio", "worker"):
        service = services[name]
        url = make_url(service["environment"]["STUDIO_DATABASE_URL"])
        assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
        assert (url.username, url.database) == (postgres["environment"]["POSTGRES_USER"], postgres["environment"]["POSTGRES_DB"])
        assert url.password == postgres["environment"]["POSTGRES_PASSWORD"]  # the same ${...} default
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert make_engine(url.render_as_string(hide_password=False)).dialect.driver == "psycopg"


@pytest.mark.slow
def test_up_starts_web_and_worker_and_stops_on_ctrl_c(tmp_path):
    """`studio up` as a laptop user sees it: the address is printed only once the page
    answers there, no Celery banner or operator warnings (running as root is said once,
    plainly), and Ctrl-C ends everything with no ERROR line."""
    port = free_port()
    log_path = tmp_path / "up.log"
    log = open(log_path, "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio", "up", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until(lambda: b"studio ready on" in log_path.read_bytes(), 120, interval=0.1, what="studio up to say it is ready")
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200  # the page answers at once
        assert f"studio ready on http://127.0.0.1:{port}".encode() in log_path.read_bytes()

        def worker_alive():
            workers = httpx.get(f"http://127.0.0.1:{port}/api/workers", timeout=5).json()
            return any(w["alive"] for w in workers)

        wait_until(worker_alive, 90, interval=0.3, what="the worker to be registered")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # serve, worker and the worker's pool child
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        assert proc.wait(30) == 0
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert alive == [], f"processes left running: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log_path.read_text(errors="replace")
    assert "ERROR" not in text, text
    for operator_note in ("SecurityWarning", "superuser", "No hostname was supplied", "[config]", "[queues]"):
        assert operator_note not in text, text
    assert text.count("running as root") == (1 if os.geteuid() == 0 else 0)
    assert (tmp_path / "data" / "studio.db").is_file()
