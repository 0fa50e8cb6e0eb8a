"""The gate every HTTP request passes before the API or the UI sees it (pure ASGI, so
Gradio's streamed responses pass through untouched):

1. Host allow-list: a foreign Host header is a DNS-rebinding page; answer 400.
2. Who is calling: a session cookie or an API token with accounts; the implicit local
   admin in single-user mode. Not logged in: 401 for API calls, the login page for pages.
3. Same origin for state changes made with a cookie (CSRF): a browser always sends Origin
   (or Referer) with a cross-site POST; a foreign one gets 403. Bearer calls are exempt:
   a browser never attaches a token on its own.
4. CORS only for configured origins; any Access-Control header from below is dropped.
5. Gradio events: each event handler belongs to a tab with a role rule (UiRules); a
   rater's hand-made call to a trainer's event is refused here, whatever the page shows.
6. The audit log: successful state changes are recorded with who made them.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Optional
from urllib.parse import quote, urlsplit

from studio.access import Role, allows
from studio.services import accounts
from studio.services.accounts import LOCAL_IDENTITY, Identity

log = logging.getLogger(__name__)

SESSION_COOKIE = "studio_session"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
RATER_PAGE = "/rate"
PUBLIC_PATHS = {"/login", "/api/health", "/favicon.ico", "/robots.txt"}
MAX_EVENT_BODY = 64 * 1024 * 1024  # a Gradio event's JSON (row edits can be long texts)
_GRADIO_NAMED = re.compile(r"^/gradio_api/(?:run|api|call(?:/v2)?)/([^/]+)/?$")
_TRAINER = frozenset({Role.trainer, Role.admin})

# (method, path pattern, audit action): the REST state changes worth a line in the log.
_AUDITED: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), a)
    for m, p, a in [
        ("POST", r"^/api/datasets/?$", "upload dataset"),
        ("PATCH", r"^/api/datasets/\d+/rows/\d+$", "edit dataset"),
        ("POST", r"^/api/datasets/\d+/(rows|rows/delete|revert|split|fixes)$", "edit dataset"),
        ("POST", r"^/api/jobs/?$", "launch job"),
        ("POST", r"^/api/jobs/\d+/cancel$", "cancel job"),
        ("POST", r"^/api/jobs/\d+/clone$", "clone job"),
        ("POST", r"^/api/jobs/\d+/exports$", "export"),
        ("DELETE", r"^/api/exports/\d+$", "delete export"),
        ("POST", r"^/api/evals/?$", "start evaluation"),
        ("POST", r"^/api/evals/\d+/cancel$", "cancel evaluation"),
        ("POST", r"^/api/campaigns/?$", "start campaign"),
        ("POST", r"^/api/campaigns/\d+/ratings$", "rate"),
        ("POST", r"^/api/campaigns/\d+/dataset$", "save ratings as dataset"),
        ("POST", r"^/api/chat/blocklist/?$", "change blocklist"),
        ("DELETE", r"^/api/chat/blocklist/\d+$", "change blocklist"),
        ("POST", r"^/api/users/?$", "add user"),
        ("POST", r"^/api/users/[^/]+/(disable|enable|token|password)$", "change user"),
    ]
]


@dataclass
class UiRules:
    """Role rules and audit names for the Gradio event handlers, by handler id."""

    roles: dict[int, frozenset[Role]] = field(default_factory=dict)
    actions: dict[int, str] = field(default_factory=dict)
    api_names: dict[str, int] = field(default_factory=dict)

    def rule(self, fn_id: Any) -> Optional[frozenset[Role]]:
        # An id the UI never registered is admin-only: nothing unknown is open.
        return self.roles.get(fn_id, frozenset({Role.admin})) if isinstance(fn_id, int) else frozenset({Role.admin})


def local_host_names(bound: str) -> set[str]:
    """The names this machine answers to when bound to `bound` (all of them for 0.0.0.0)."""
    names = {"localhost", "127.0.0.1", "::1", bound.strip("[]").lower()}
    if bound in ("0.0.0.0", "::", ""):
        import psutil

        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        for addresses in psutil.net_if_addrs().values():
            names |= {a.address.split("%")[0].lower() for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6)}
    return names


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Gate:
    def __init__(self, app, ctx, ui: Optional[UiRules] = None, rater_ui: Optional[UiRules] = None):
        self.app, self.ctx = app, ctx
        self.ui, self.rater_ui = ui or UiRules(), rater_ui or UiRules()
        settings = ctx.settings
        self.any_host = "*" in settings.allowed_hosts
        self.hosts = local_host_names(settings.host) | {h.lower() for h in settings.allowed_hosts}
        self.cors = {o.rstrip("/").lower() for o in settings.cors_origins}
        self._users_exist = False
        self._checked_at = 0.0

    # --- mode and identity ------------------------------------------------------------

    def users_exist(self) -> bool:
        # Accounts are never deleted, so once one exists it always will.
        if not self._users_exist and time.monotonic() - self._checked_at > 1.0:
            self._users_exist = accounts.has_users(self.ctx.engine)
            self._checked_at = time.monotonic()
        return self._users_exist

    def identify(self, headers: dict[str, str]) -> tuple[Optional[Identity], bool]:
        """(identity, by_token). Without accounts everyone is the local admin."""
        if not self.users_exist():
            return LOCAL_IDENTITY, False
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return accounts.identity_for_token(self.ctx.engine, auth[7:].strip()), True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            return None, False
        morsel = cookie.get(SESSION_COOKIE)
        if morsel is None or not morsel.value:
            return None, False
        return accounts.identity_for_session(self.ctx.engine, morsel.value), False

    # --- the ASGI call ----------------------------------------------------------------

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path, method = scope.get("path", ""), scope.get("method", "GET").upper()

        host = _host_name(headers.get("host", ""))
        if not self.any_host and host not in self.hosts:
            return await _answer(send, 400, f"This studio does not answer to the host name '{host[:100]}'. "
                                 "If that name is really this studio, add it to STUDIO_ALLOWED_HOSTS.")

        origin = self._origin(headers)
        if method in UNSAFE_METHODS and "authorization" not in headers and origin is not None:
            if not self._same_origin(origin, headers.get("host", "")) and origin not in self.cors:
                return await _answer(send, 403, "Refused: this request came from another web site (cross-origin).")
        if method == "OPTIONS" and origin in self.cors:
            return await self._preflight(send, origin)

        identity, by_token = self.identify(headers)
        if identity is None and path not in PUBLIC_PATHS:
            if headers.get("authorization") or path.startswith(("/api", "/v1", "/gradio_api")) or method != "GET":
                return await _answer(send, 401, "Log in first: a session from /login, or Authorization: Bearer TOKEN.",
                                     openai=path.startswith("/v1"))
            return await _redirect(send, "/login?next=" + quote(path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""), safe="/"))
        scope.setdefault("state", {})["identity"] = identity
        ip = (scope.get("client") or ("", 0))[0] or ""

        # Raters get their own page (/rate) and the API; the trainers' page is not theirs.
        in_rater_page = path == RATER_PAGE or path.startswith(RATER_PAGE + "/")
        if identity is not None and identity.role == Role.rater and not in_rater_page and path not in PUBLIC_PATHS:
            if path in ("/", "") and method == "GET":
                return await _redirect(send, RATER_PAGE + "/")
            if not path.startswith(("/api/", "/v1/", "/logout")):
                return await _answer(send, 403, "a rater may not do this")
        ui_rules, ui_path = (self.rater_ui, path[len(RATER_PAGE):]) if in_rater_page else (self.ui, path)

        action = None
        if ui_path.startswith("/gradio_api/") and method == "POST":
            fn_id, receive, too_big = await self._event_target(ui_path, ui_rules, receive)
            if too_big:
                return await _answer(send, 413, "This request is too big.")
            if fn_id is not False:
                if not allows(ui_rules.rule(fn_id), identity):
                    return await _answer(send, 403, f"a {identity.role.value} may not do this")
                action = ui_rules.actions.get(fn_id) if isinstance(fn_id, int) else None
            elif ui_path.rstrip("/") == "/gradio_api/upload" and not allows(_TRAINER, identity):
                return await _answer(send, 403, f"a {identity.role.value} may not upload files")
        elif method in UNSAFE_METHODS:
            action = next((a for m, p, a in _AUDITED if m == method and p.match(path)), None)

        allow_origin = origin if origin in self.cors else None
        state = {"status": 0}

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message = _cors_headers(message, allow_origin)
            await send(message)

        await self.app(scope, receive, guarded_send)
        if action and 200 <= state["status"] < 300:
            try:
                # A UI event is recorded when it is queued: its handler has not run yet.
                ui_event = ui_path.startswith("/gradio_api")
                accounts.record(self.ctx.engine, identity.name, action, "" if ui_event else path,
                                outcome="requested" if ui_event else "ok", ip=ip)
            except Exception:
                log.exception("audit record failed")

    # --- helpers ----------------------------------------------------------------------

    @staticmethod
    def _origin(headers: dict[str, str]) -> Optional[str]:
        if "origin" in headers:
            return headers["origin"].rstrip("/").lower()
        referer = headers.get("referer")
        if referer:
            parts = urlsplit(referer)
            return f"{parts.scheme}://{parts.netloc}".lower()
        return None

    @staticmethod
    def _same_origin(origin: str, host_header: str) -> bool:
        netloc = urlsplit(origin).netloc if "://" in origin else ""
        return bool(netloc) and netloc == host_header.strip().lower()

    async def _event_target(self, path: str, rules: UiRules, receive):
        """Which UI event handler a Gradio call runs: (fn id or None if unreadable, or
        False when the path runs none; the receive to pass on; too big)."""
        named = _GRADIO_NAMED.match(path)
        if named:
            return rules.api_names.get(named.group(1)), receive, False
        if path.rstrip("/") != "/gradio_api/queue/join":
            return False, receive, False
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_EVENT_BODY:
                return None, receive, True
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            fn_id = json.loads(body).get("fn_index")
        except (ValueError, AttributeError, RecursionError):
            fn_id = None
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return fn_id, replay, False

    async def _preflight(self, send, origin: str):
        await send({"type": "http.response.start", "status": 204, "headers": [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE"),
            (b"access-control-allow-headers", b"authorization, content-type"),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
        ]})
        await send({"type": "http.response.body", "body": b""})


def _cors_headers(message: dict, allow_origin: Optional[str]) -> dict:
    headers = [(k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-control-")]
    if allow_origin:
        headers += [(b"access-control-allow-origin", allow_origin.encode("latin-1")), (b"vary", b"Origin")]
    return {**message, "headers": headers}


async def _answer(send, status: int, detail: str, openai: bool = False) -> None:
    # OpenAI clients (/v1) read errors as {"error": {...}}
    error = {"message": detail, "type": "authentication_error" if status == 401 else "invalid_request_error",
             "param": None, "code": "invalid_api_key" if status == 401 else None}
    body = json.dumps({"error": error} if openai else {"detail": detail, "errors": [detail]}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
