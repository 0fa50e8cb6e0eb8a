"""The `studio` command: up (everything on one machine), serve, worker, migrate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from studio.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="No-code instruction fine-tuning studio.")

HostOpt = Annotated[Optional[str], typer.Option(help="Address to listen on.", envvar="STUDIO_HOST")]
PortOpt = Annotated[Optional[int], typer.Option(help="Port to listen on.", envvar="STUDIO_PORT")]
DataOpt = Annotated[
    Optional[Path], typer.Option(help="Folder for the DB, queue and artifacts.", envvar="STUDIO_DATA_DIR")
]


def _settings(data_dir: Optional[Path] = None, **overrides) -> Settings:
    """Settings from the environment, with command-line values on top; exported so the
    worker processes this command starts see the same ones."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    settings = Settings(**values)
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    os.environ["STUDIO_DATA_DIR"] = str(settings.data_dir)
    return settings


@app.command()
def migrate(data_dir: DataOpt = None) -> None:
    """Create or upgrade the database schema."""
    from studio.migrate import upgrade

    settings = _settings(data_dir)
    upgrade(settings.db_url)
    typer.echo(f"database ready: {settings.db_url}")


@app.command()
def serve(host: HostOpt = None, port: PortOpt = None, data_dir: DataOpt = None) -> None:
    """Run the web app (UI + REST API) without a worker."""
    import uvicorn

    from studio.app import create_app
    from studio.migrate import upgrade

    settings = _settings(data_dir, host=host, port=port)
    upgrade(settings.db_url)
    typer.echo(f"studio on http://{settings.host}:{settings.port}  (data: {settings.data_dir})")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


@app.command()
def worker(data_dir: DataOpt = None, name: Annotated[str, typer.Option(help="Worker node name.")] = "trainer") -> None:
    """Run a training worker: one process, one job at a time."""
    _settings(data_dir)
    from worker.tasks import app as celery_app

    celery_app.worker_main(
        ["worker", "--pool=prefork", "--concurrency=1", "--loglevel=INFO", "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
    )


@app.command()
def up(host: HostOpt = None, port: PortOpt = None, data_dir: DataOpt = None) -> None:
    """Migrate, then start the web app and one local worker; Ctrl-C stops both."""
    settings = _settings(data_dir, host=host, port=port)
    from studio.migrate import upgrade

    upgrade(settings.db_url)
    env = {**os.environ, "STUDIO_DATA_DIR": str(settings.data_dir)}
    if host:
        env["STUDIO_HOST"] = host
    if port:
        env["STUDIO_PORT"] = str(port)
    # Each child gets its own process group so stopping the worker also stops its pool.
    procs = [
        subprocess.Popen([sys.executable, "-m", "studio", "worker"], env=env, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "studio", "serve"], env=env, start_new_session=True),
    ]
    stopping = False

    def _stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.3)
    finally:
        typer.echo("stopping the studio and its worker")
        _stop_groups(procs, grace_seconds=10)
    crashed = [p.args[-1] for p in procs if p.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL)]
    if crashed and not stopping:
        typer.echo(f"stopped because {', '.join(crashed)} exited", err=True)
        raise typer.Exit(1)


def _stop_groups(procs: list[subprocess.Popen], grace_seconds: float) -> None:
    """SIGTERM each child's process group, then SIGKILL what is left after the grace
    period. A job cut off this way is requeued when its lease expires."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker's pool child, if any
        except ProcessLookupError:
            pass
        proc.wait()


if __name__ == "__main__":
    app()
