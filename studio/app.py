"""The web app: FastAPI with the REST API, the Gradio UI mounted at /, and the reaper."""

from __future__ import annotations

import logging
import os
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from studio.access import identity_of
from studio.api import install_error_handlers, public_router, router
from studio.api_accounts import admin_router, me_router
from studio.api_accounts import pages as account_pages
from studio.gate import RATER_PAGE, Gate
from studio.services.accounts import LoginLimiter
from studio import api_campaigns, api_evals, api_exports, api_v1
from studio.eventbus import StreamIngester
from studio.services.context import StudioContext
from studio.services import evals as eval_service
from studio.services import exports as export_service
from studio.services.jobs import reap
from studio.settings import Settings
from studio.uploadlimit import UploadLimit

log = logging.getLogger(__name__)


def _reaper_loop(ctx: StudioContext, stop: threading.Event) -> None:
    """Requeue jobs whose worker died, checking a few times per lease."""
    while not stop.wait(max(1.0, ctx.settings.lease_seconds / 4)):
        try:
            reap(ctx)
            export_service.reap(ctx)
            eval_service.reap(ctx)
            eval_service.auto_evaluate(ctx)
        except Exception:
            log.exception("reaper pass failed")


def use_own_gradio_folder(settings: Settings) -> None:
    """Gradio's uploads and cache go to this studio's data dir, not a folder every studio
    (and user) on the host shares, and its analytics stay off. Gradio reads both from the
    environment when a Blocks is built, so this runs before build_ui."""
    settings.gradio_dir.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(settings.gradio_dir)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def create_app(settings: Settings, with_ui: bool = True) -> FastAPI:
    ctx = StudioContext.from_settings(settings)
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        threading.Thread(target=_reaper_loop, args=(ctx, stop), name="reaper", daemon=True).start()
        if settings.event_channel == "redis":
            ingester = StreamIngester(settings.events_redis_url, ctx.engine)
            threading.Thread(target=ingester.run, args=(stop,), name="event-ingest", daemon=True).start()
        yield
        stop.set()

    app = FastAPI(title="Fine-tuning studio", version="0.1.0", lifespan=lifespan)
    app.state.ctx = ctx
    app.state.login_limiter = LoginLimiter(settings.login_failures_per_account, settings.login_failures_per_ip)
    app.include_router(public_router)
    app.include_router(router)
    app.include_router(api_exports.router)
    app.include_router(api_evals.router)
    app.include_router(api_campaigns.router)
    app.include_router(account_pages)
    app.include_router(me_router)
    app.include_router(admin_router)
    api_v1.install(app)  # /v1 (OpenAI-compatible) and /api/chat
    install_error_handlers(app)
    api_exports.install_error_handlers(app)
    api_evals.install_error_handlers(app)
    api_campaigns.install_error_handlers(app)
    app.add_middleware(UploadLimit, max_bytes=int(settings.max_upload_mb * 1e6))
    ui_rules = rater_rules = None
    if with_ui:
        use_own_gradio_folder(settings)
        import gradio as gr

        from studio.ui import dashboard_api
        from studio.ui.app import CSS, TRAINER_CSS, build_rater_rules, build_ui
        from studio.ui.page_script import PageScript
        from studio.ui.rater_app import build_rater_ui

        app.include_router(dashboard_api.router)  # before the UI's mount at /, which takes every path
        # Gradio refuses bigger uploads before they reach the disk; the service checks again.
        limit = int(settings.max_upload_mb * 1e6)
        mount = dict(max_file_size=limit, auth_dependency=_user_name, run_history=False, footer_links=[], css=CSS)
        rater_page = build_rater_ui(ctx)
        rater_rules = build_rater_rules(rater_page)
        app = gr.mount_gradio_app(app, rater_page, path=RATER_PAGE, **mount)
        page, ui_rules = build_ui(ctx)
        app = gr.mount_gradio_app(app, page, path="/", **{**mount, "css": TRAINER_CSS})
        app.add_middleware(PageScript, paths=("/", RATER_PAGE))
    # Outermost: the host, origin and login checks come before everything else.
    app.add_middleware(Gate, ctx=ctx, ui=ui_rules, rater_ui=rater_rules)
    return app


def _user_name(request) -> str | None:
    """Gradio's view of who is calling (gr.Request.username); the gate has checked it."""
    identity = identity_of(request)
    return identity.name if identity else None
