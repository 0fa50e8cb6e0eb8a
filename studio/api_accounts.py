"""Login, logout, who am I, and user management (admins) with the audit log."""

from __future__ import annotations

import html
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from studio.access import Role, identity_of, public, require, require_user
from studio.gate import SESSION_COOKIE
from studio.models import AuditPublic, UserPublic
from studio.services import accounts
from studio.services.accounts import AccountError, LoginRefused

pages = APIRouter(dependencies=[Depends(public())], include_in_schema=False)
me_router = APIRouter(prefix="/api", dependencies=[Depends(require_user())])
admin_router = APIRouter(prefix="/api", dependencies=[Depends(require(Role.admin))])


def _ctx(request: Request):
    return request.app.state.ctx


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never '//evil.example' or 'https://...'."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:2000]


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · Fine-tuning studio</title>
<style>
 body {{ font-family: system-ui, sans-serif; background: #f5f6f8; margin: 0; display: grid; place-items: center; min-height: 100vh; }}
 form {{ background: white; padding: 2rem 2.2rem; border-radius: 12px; box-shadow: 0 2px 12px #0002; width: 20rem; }}
 h1 {{ font-size: 1.3rem; margin: 0 0 1.2rem; }}
 label {{ display: block; font-size: .9rem; margin: .8rem 0 .3rem; color: #333; }}
 input {{ width: 100%; box-sizing: border-box; padding: .55rem .6rem; font-size: 1rem; border: 1px solid #bbb; border-radius: 6px; }}
 button {{ margin-top: 1.3rem; width: 100%; padding: .6rem; font-size: 1rem; border: 0; border-radius: 6px; background: #ea580c; color: white; cursor: pointer; }}
 .error {{ background: #fee2e2; color: #991b1b; padding: .6rem .7rem; border-radius: 6px; font-size: .9rem; }}
 .hint {{ color: #666; font-size: .8rem; margin-top: 1rem; }}
</style></head>
<body><form method="post" action="/login" id="login-form">
<h1>Fine-tuning studio</h1>
{message}
<label for="username">User name</label><input id="username" name="username" autocomplete="username" required autofocus value="{username}">
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{next}">
<button type="submit" id="login-button">Log in</button>
<p class="hint">No account? Ask the studio's admin to add you.</p>
</form></body></html>"""


def _login_page(next_path: str, message: str = "", username: str = "", status: int = 200) -> HTMLResponse:
    box = f'<p class="error" id="login-error" role="alert">{html.escape(message)}</p>' if message else ""
    page = LOGIN_PAGE.format(message=box, username=html.escape(username), next=html.escape(next_path))
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


@pages.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: Annotated[str, Query(max_length=2000)] = "/") -> Response:
    if identity_of(request) is not None:  # single-user mode, or already logged in
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(_safe_next(next))


@pages.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    ctx = _ctx(request)
    target = _safe_next(next)
    if not accounts.has_users(ctx.engine):
        return RedirectResponse(target, status_code=303)
    try:
        # Argon2 takes tens of milliseconds of CPU: off the event loop.
        cookie, _identity = await run_in_threadpool(
            accounts.login, ctx.engine, request.app.state.login_limiter, username, password, _ip(request),
            ctx.settings.session_hours,
        )
    except LoginRefused as refused:
        status = 429 if refused.retry_after else 401
        response = _login_page(target, refused.message, username[:64], status)
        if refused.retry_after:
            response.headers["Retry-After"] = str(int(refused.retry_after) + 1)
        return response
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=int(ctx.settings.session_hours * 3600), httponly=True, samesite="lax",
        secure=request.url.scheme == "https", path="/",
    )
    return response


@pages.post("/logout")
def logout(request: Request) -> Response:
    ctx = _ctx(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        name = accounts.logout(ctx.engine, cookie)
        if name:
            accounts.record(ctx.engine, name, "logout", ip=_ip(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


class Me(BaseModel):
    name: str
    role: Role
    mode: Literal["local", "accounts", "open"]


@me_router.get("/me", response_model=Me)
def who_am_i(request: Request) -> Me:
    """Who this request is from, and the studio's mode."""
    ctx = _ctx(request)
    identity = identity_of(request)
    return Me(name=identity.name, role=identity.role, mode=accounts.mode(ctx.settings.host, accounts.has_users(ctx.engine)))


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=accounts.MIN_PASSWORD, max_length=accounts.MAX_PASSWORD)


class TokenCreated(BaseModel):
    name: str
    token: str = Field(description="Shown once; only its hash is stored")


UserName = Annotated[str, Path(max_length=64)]


def _account_call(fn, *args):
    try:
        return fn(*args)
    except AccountError as exc:
        raise HTTPException(422, str(exc)) from None


@admin_router.get("/users", response_model=list[UserPublic])
def list_users(request: Request) -> list[UserPublic]:
    return accounts.list_users(_ctx(request).engine)


@admin_router.post("/users", status_code=201, response_model=UserPublic)
async def add_user(request: Request, body: UserCreate) -> UserPublic:
    return await run_in_threadpool(_account_call, accounts.add_user, _ctx(request).engine, body.name, body.role.value, body.password)


@admin_router.post("/users/{name}/disable", response_model=UserPublic)
def disable_user(request: Request, name: UserName) -> UserPublic:
    return _account_call(accounts.set_disabled, _ctx(request).engine, name, True)


@admin_router.post("/users/{name}/enable", response_model=UserPublic)
def enable_user(request: Request, name: UserName) -> UserPublic:
    return _account_call(accounts.set_disabled, _ctx(request).engine, name, False)


@admin_router.post("/users/{name}/token", status_code=201, response_model=TokenCreated)
def new_token(request: Request, name: UserName) -> TokenCreated:
    return TokenCreated(name=name, token=_account_call(accounts.create_token, _ctx(request).engine, name))


@admin_router.get("/audit", response_model=list[AuditPublic])
def audit(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    action: Annotated[Optional[str], Query(max_length=64)] = None,
) -> list[AuditPublic]:
    """Who did what and when, newest first."""
    return accounts.audit_log(_ctx(request).engine, limit, offset, action)
