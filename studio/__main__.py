"""The `studio` command: up (everything on one machine), serve, worker, infer, migrate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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


NoAuthOpt = Annotated[
    bool,
    typer.Option("--no-auth", help="Serve a non-loopback address with no accounts and no login (dangerous).",
                 envvar="STUDIO_NO_AUTH"),
]


def _check_mode(settings: Settings) -> None:
    """Refuse to serve a network address with no accounts; warn loudly under --no-auth."""
    from studio.db import engine_for
    from studio.services import accounts

    engine = engine_for(settings.db_url)
    users = accounts.has_users(engine)
    if not users and settings.admin_user and settings.admin_password_file:
        _bootstrap_admin(engine, settings.admin_user, settings.admin_password_file)
        users = True
    problem = accounts.startup_problem(settings.host, settings.no_auth, users)
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    if not users and not accounts.is_loopback(settings.host):
        typer.secho(
            f"WARNING: --no-auth: serving {settings.host} with no login. Anyone who can reach this port can "
            "train, read and delete everything.", fg="red", bold=True, err=True,
        )


def _bootstrap_admin(engine, name: str, password_file: Path) -> None:
    """The first admin of a deployment (docker compose), from a secret file."""
    from studio.services import accounts

    try:
        password = password_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        typer.echo(f"error: STUDIO_ADMIN_PASSWORD_FILE {password_file}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    user = _accounts_call(accounts.add_user, engine, name, "admin", password)
    accounts.record(engine, "startup", "add user", f"{user.name} (admin)")
    typer.echo(f"added the first admin, {user.name}, from {password_file}")


@app.command()
def serve(host: HostOpt = None, port: PortOpt = None, data_dir: DataOpt = None, no_auth: NoAuthOpt = False) -> None:
    """Run the web app (UI + REST API) without a worker."""
    import uvicorn

    from studio.app import create_app
    from studio.migrate import upgrade

    settings = _settings(data_dir, host=host, port=port, no_auth=no_auth or None)
    upgrade(settings.db_url)
    _check_mode(settings)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                           log_level="warning"))
    # The address is said once the page answers there (building the UI takes seconds).
    announce = f"studio ready on http://{settings.host}:{settings.port}  (data: {settings.data_dir})"
    threading.Thread(target=_say_when_started, args=(server, announce), daemon=True).start()
    server.run()


def _say_when_started(server, text: str) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.1)
    typer.echo(text)


@app.command()
def worker(
    data_dir: DataOpt = None,
    name: Annotated[str, typer.Option(help="Worker node name.")] = "trainer",
    quiet: Annotated[bool, typer.Option(help="Warnings and errors only: no banner, no notes meant for operators.")] = False,
) -> None:
    """Run a training worker: one process, one job at a time."""
    _settings(data_dir)
    from worker.tasks import app as celery_app

    if quiet:  # what `studio up` runs: one person's laptop, not an operated server
        import logging
        import warnings

        from celery.exceptions import SecurityWarning

        warnings.filterwarnings("ignore", category=SecurityWarning)  # running as root: `up` says so once
        logging.getLogger("kombu.connection").addFilter(  # the embedded broker's URL has no host, by design
            lambda record: "No hostname was supplied" not in record.getMessage())
    celery_app.worker_main(
        [*(["--quiet"] if quiet else []), "worker", "--pool=prefork", "--concurrency=1",
         f"--loglevel={'WARNING' if quiet else 'INFO'}", "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
    )


@app.command()
def infer(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default: STUDIO_INFER_URL's).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on (default: STUDIO_INFER_URL's).")] = None,
    data_dir: DataOpt = None,
    preload: Annotated[list[str], typer.Option(help="Base models to load at start (repeat; none: --preload '').")] = ["demo"],
) -> None:
    """Run the model host: base models kept in memory, checkpoints as adapters, for chat and /v1."""
    from urllib.parse import urlsplit

    import uvicorn

    from studio.core.basemodels import ModelAccess
    from worker.infer.engine import Engine, GenerateRequest, ModelSpec
    from worker.infer.host import create_host

    settings = _settings(data_dir)
    url = urlsplit(settings.infer_url)
    host, port = host or url.hostname or "127.0.0.1", port or url.port or 7862
    engine = Engine(settings.artifacts_root, ModelAccess.from_settings(settings), settings.infer_memory_gb,
                    settings.infer_load_in, cache_entries=settings.infer_cache_entries).start()
    for base in filter(None, preload):  # the first chat answers without waiting for a load
        engine.submit(GenerateRequest(model=ModelSpec(id=base, base=base), prompt="hello", max_tokens=1), lambda _: None)
    typer.echo(f"model host on http://{host}:{port}  ({engine.device}, budget {engine.budget / 1024**3:.1f} GB)")
    try:
        uvicorn.run(create_host(engine, settings.infer_token), host=host, port=port, log_level="warning")
    finally:
        engine.stop()


@app.command()
def up(host: HostOpt = None, port: PortOpt = None, data_dir: DataOpt = None, no_auth: NoAuthOpt = False) -> None:
    """Migrate, then start the web app, one local worker and the model host; Ctrl-C stops them."""
    settings = _settings(data_dir, host=host, port=port, no_auth=no_auth or None)
    from studio.migrate import upgrade

    upgrade(settings.db_url)
    _check_mode(settings)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        typer.echo("Note: running as root (the administrator account). It works; an ordinary account is safer.")
    typer.echo("starting the studio: the web app, a training worker and the model host...")
    env = {**os.environ, "STUDIO_DATA_DIR": str(settings.data_dir)}
    if no_auth:
        env["STUDIO_NO_AUTH"] = "true"
    if host:
        env["STUDIO_HOST"] = host
    if port:
        env["STUDIO_PORT"] = str(port)
    if "STUDIO_INFER_URL" not in os.environ:  # beside the web app's port, so two studios do not collide
        env["STUDIO_INFER_URL"] = f"http://127.0.0.1:{settings.port + 2}"
    # Each child gets its own process group so stopping the worker also stops its pool.
    procs = [
        subprocess.Popen([sys.executable, "-m", "studio", "worker", "--quiet"], env=env, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "studio", "serve"], env=env, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "studio", "infer"], env=env, start_new_session=True),
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
        typer.echo("stopping the studio, its worker and the model host")
        _stop_groups(procs, grace_seconds=10)
    crashed = [p.args[-1] for p in procs if p.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL)]
    if crashed and not stopping:
        typer.echo(f"stopped because {', '.join(crashed)} exited", err=True)
        raise typer.Exit(1)


def _stop_groups(procs: list[subprocess.Popen], grace_seconds: float) -> None:
    """SIGTERM each child, then SIGKILL what is left of its process group after the grace
    period. A job cut off this way is requeued when its lease expires. Only the child
    itself gets the SIGTERM: the worker then stops its own pool (a pool process that got
    a SIGTERM too would be logged as an ERROR at every clean stop)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
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


users = typer.Typer(no_args_is_help=True, help="Accounts: admins, trainers and raters.")
app.add_typer(users, name="user")
RoleOpt = Annotated[str, typer.Option("--role", help="admin, trainer or rater")]


def _engine(data_dir: Optional[Path]):
    from studio.db import engine_for
    from studio.migrate import upgrade

    settings = _settings(data_dir)
    upgrade(settings.db_url)
    return engine_for(settings.db_url)


def _accounts_call(fn, *args):
    from studio.services.accounts import AccountError

    try:
        return fn(*args)
    except AccountError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@users.command("add")
def user_add(
    name: str,
    role: RoleOpt = "trainer",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")] = False,
    data_dir: DataOpt = None,
) -> None:
    """Add a user; asks for the password (or reads it with --password-stdin)."""
    from studio.services import accounts

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    engine = _engine(data_dir)
    user = _accounts_call(accounts.add_user, engine, name, role, password)
    accounts.record(engine, "cli", "add user", f"{user.name} ({user.role})")
    typer.echo(f"added {user.name} ({user.role})")


@users.command("list")
def user_list(data_dir: DataOpt = None) -> None:
    """List the users, their roles and whether they are active."""
    from studio.services import accounts

    rows = accounts.list_users(_engine(data_dir))
    if not rows:
        typer.echo("no users: the studio runs in single-user mode on 127.0.0.1")
    for user in rows:
        seen = user.last_login_at.strftime("%Y-%m-%d %H:%M") if user.last_login_at else "never"
        typer.echo(f"{user.name:<24} {user.role:<8} {'disabled' if user.disabled else 'active':<9} last login {seen}")


def _set_disabled(name: str, disabled: bool, data_dir: Optional[Path]) -> None:
    from studio.services import accounts

    engine = _engine(data_dir)
    action = "disable" if disabled else "enable"
    _accounts_call(accounts.set_disabled, engine, name, disabled)
    accounts.record(engine, "cli", "change user", f"{name}: {action}")
    typer.echo(f"{action}d {name}")


@users.command("disable")
def user_disable(name: str, data_dir: DataOpt = None) -> None:
    """Disable a user: their sessions end at once and their API tokens stop working."""
    _set_disabled(name, True, data_dir)


@users.command("enable")
def user_enable(name: str, data_dir: DataOpt = None) -> None:
    """Enable a disabled user again."""
    _set_disabled(name, False, data_dir)


@users.command("token")
def user_token(name: str, data_dir: DataOpt = None) -> None:
    """Make an API token for a user (Authorization: Bearer TOKEN). It is shown only now."""
    from studio.services import accounts

    engine = _engine(data_dir)
    token = _accounts_call(accounts.create_token, engine, name)
    accounts.record(engine, "cli", "change user", f"{name}: token")
    typer.echo(token)


if __name__ == "__main__":
    app()
