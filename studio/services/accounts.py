"""Accounts: users with roles, Argon2 passwords, browser sessions, API tokens, the
failed-login limiter, the audit log, and which mode the studio runs in.

Login sessions and API tokens are random values; only their sha256 is stored, so a DB
copy does not log anyone in, and a lookup is one indexed query (Argon2 is for passwords,
which are guessable; a 256-bit random token is not).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal, Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, func, update
from sqlalchemy.engine import Engine
from sqlmodel import select

from studio.access import Role
from studio.db import session_scope
from studio.models import ApiToken, AuditEvent, AuditPublic, LoginSession, User, UserPublic, utcnow

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # Argon2 hashes any length; a cap keeps a login request cheap
TOKEN_PREFIX = "fts_"
LOCAL_USER = "local"
FAILURE_WINDOW_SECONDS = 15 * 60

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

Mode = Literal["local", "accounts", "open"]


class AccountError(ValueError):
    """A user-management request that cannot be done; the message says why."""


class LoginRefused(Exception):
    """A login that failed; `message` is safe to show, `retry_after` set when rate-limited."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Identity:
    """Who is calling: a user, or the implicit admin of local single-user mode."""

    name: str
    role: Role
    user_id: Optional[int] = None

    @property
    def local(self) -> bool:
        return self.user_id is None


LOCAL_IDENTITY = Identity(LOCAL_USER, Role.admin)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _public(user: User) -> UserPublic:
    return UserPublic.model_validate(user, from_attributes=True)


# --- users ----------------------------------------------------------------------------


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME_PATTERN.match(name):
        raise AccountError(
            f"user name {name[:70]!r}: use 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
        )
    if name == LOCAL_USER:
        raise AccountError(f"user name '{LOCAL_USER}' is reserved for single-user mode")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password: use at most {MAX_PASSWORD} characters")
    return password


def parse_role(role: str) -> Role:
    try:
        return Role(role.strip().lower())
    except ValueError:
        raise AccountError(f"role {role[:40]!r}: choose admin, trainer or rater") from None


def add_user(engine: Engine, name: str, role: str, password: str) -> UserPublic:
    name, role_value, password = check_name(name), parse_role(role), check_password(password)
    password_hash = _hasher.hash(password)
    with session_scope(engine) as session:
        if session.exec(select(User).where(func.lower(User.name) == name.lower())).first():
            raise AccountError(f"user '{name}' already exists")
        user = User(name=name, role=role_value.value, password_hash=password_hash)
        session.add(user)
        session.flush()
        return _public(user)


def list_users(engine: Engine) -> list[UserPublic]:
    with session_scope(engine) as session:
        return [_public(u) for u in session.exec(select(User).order_by(User.name))]


def _get_user(session, name: str) -> User:
    user = session.exec(select(User).where(User.name == name)).first()
    if user is None:
        raise AccountError(f"no user named {name[:70]!r}")
    return user


def set_disabled(engine: Engine, name: str, disabled: bool) -> UserPublic:
    """Disable (or enable) a user. Disabling ends their sessions at once; their tokens
    stop working while they are disabled."""
    with session_scope(engine) as session:
        user = _get_user(session, name)
        if disabled and user.role == Role.admin.value and not user.disabled:
            active_admins = session.exec(
                select(func.count()).select_from(User).where(User.role == Role.admin.value, User.disabled == False)  # noqa: E712
            ).one()
            if active_admins <= 1:
                raise AccountError(f"'{name}' is the last active admin; add another admin first")
        user.disabled = disabled
        if disabled:
            for login in session.exec(select(LoginSession).where(LoginSession.user_id == user.id)):
                session.delete(login)
        session.add(user)
        session.flush()
        return _public(user)


def set_password(engine: Engine, name: str, password: str) -> UserPublic:
    password_hash = _hasher.hash(check_password(password))
    with session_scope(engine) as session:
        user = _get_user(session, name)
        user.password_hash = password_hash
        for login in session.exec(select(LoginSession).where(LoginSession.user_id == user.id)):
            session.delete(login)
        session.add(user)
        session.flush()
        return _public(user)


def create_token(engine: Engine, name: str) -> str:
    """A new API token for the user, returned once; only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope(engine) as session:
        user = _get_user(session, name)
        session.add(ApiToken(user_id=user.id, token_hash=_digest(token), prefix=token[:10]))
    return token


def identity_by_name(engine: Engine, name: str) -> Optional[Identity]:
    """The identity of an active user by name; the local admin for 'local'."""
    if name == LOCAL_USER:
        return LOCAL_IDENTITY
    with session_scope(engine) as session:
        user = session.exec(select(User).where(User.name == name)).first()
        if user is None or user.disabled:
            return None
        return Identity(user.name, Role(user.role), user.id)


def has_users(engine: Engine) -> bool:
    """Whether any account exists (disabled ones count: disabling the last user must
    never reopen the studio to everyone)."""
    with session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(User)).one() > 0


# --- logins ---------------------------------------------------------------------------


class LoginLimiter:
    """Failed logins per account and per address in a sliding window, in memory. A
    success clears the account's count; waiting out the window clears both."""

    def __init__(self, per_account: int, per_ip: int, window: float = FAILURE_WINDOW_SECONDS):
        self.per_account, self.per_ip, self.window = per_account, per_ip, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait_seconds(self, account: str, ip: str) -> float:
        """0 when a login may be tried now, else how long until it may."""
        now = time.time()
        with self._lock:
            waits = []
            for key, limit in ((f"user:{account.lower()}", self.per_account), (f"ip:{ip}", self.per_ip)):
                times = self._recent(key, now)
                if len(times) >= limit:
                    waits.append(times[len(times) - limit] + self.window - now)
            return max(waits, default=0.0)

    def failed(self, account: str, ip: str) -> None:
        now = time.time()
        with self._lock:
            for key in (f"user:{account.lower()}", f"ip:{ip}"):
                self._recent(key, now).append(now)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{account.lower()}", None)


def login(engine: Engine, limiter: LoginLimiter, name: str, password: str, ip: str, hours: float) -> tuple[str, Identity]:
    """Check a password and open a session; returns the cookie value and who logged in.
    The same message for an unknown user, a wrong password and a disabled user."""
    name, password = name.strip()[:64], password[:MAX_PASSWORD]
    wait = limiter.wait_seconds(name, ip)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        record(engine, name or "?", "login", outcome="limited", ip=ip)
        raise LoginRefused(f"Too many failed logins. Try again in about {minutes} minute{'s' if minutes > 1 else ''}.", wait)
    with session_scope(engine) as session:
        user = session.exec(select(User).where(User.name == name)).first()
        stored = user.password_hash if user is not None else _DUMMY_HASH
        try:
            ok = _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            ok = False
        failure = None if ok and user is not None and not user.disabled else ("disabled" if ok else "failed")
        if failure is None:
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            cookie = secrets.token_urlsafe(32)
            session.add(LoginSession(user_id=user.id, token_hash=_digest(cookie), expires_at=time.time() + hours * 3600))
            user.last_login_at = utcnow()
            session.add(user)
            session.add(AuditEvent(actor=user.name, action="login", ip=ip[:64]))
            identity = Identity(user.name, Role(user.role), user.id)
    # Raised after the session has closed, so the failure's audit line is not rolled back.
    if failure:
        limiter.failed(name, ip)
        record(engine, name or "?", "login", outcome=failure, ip=ip)
        raise LoginRefused("Wrong user name or password.")
    limiter.succeeded(name)
    return cookie, identity


def logout(engine: Engine, cookie: str) -> Optional[str]:
    """End a session; returns whose it was."""
    with session_scope(engine) as session:
        login_row = session.exec(select(LoginSession).where(LoginSession.token_hash == _digest(cookie))).first()
        if login_row is None:
            return None
        user = session.get(User, login_row.user_id)
        session.delete(login_row)
        return user.name if user else None


def identity_for_session(engine: Engine, cookie: str) -> Optional[Identity]:
    with session_scope(engine) as session:
        row = session.exec(
            select(LoginSession, User)
            .join(User, User.id == LoginSession.user_id)
            .where(LoginSession.token_hash == _digest(cookie))
        ).first()
        if row is None:
            return None
        login_row, user = row
        if login_row.expires_at < time.time():
            session.delete(login_row)
            return None
        if user.disabled:
            return None
        return Identity(user.name, Role(user.role), user.id)


# Built once: every API call is looked up, and composing the statement and loading ORM
# objects cost more than SQLite takes to find the row.
_TOKEN_LOOKUP = (
    select(ApiToken.id, ApiToken.revoked, ApiToken.last_used_at, User.id.label("user_id"), User.name, User.role,
           User.disabled)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("digest"))
)
_TOKEN_TOUCH = update(ApiToken).where(ApiToken.id == bindparam("token_id")).values(last_used_at=bindparam("now"))


def identity_for_token(engine: Engine, token: str) -> Optional[Identity]:
    if not token.startswith(TOKEN_PREFIX):
        return None
    with engine.connect() as conn:
        row = conn.execute(_TOKEN_LOOKUP, {"digest": _digest(token)}).first()
        if row is None or row.revoked or row.disabled:
            return None
        # Touch at most once a minute: a busy client should not write on every call.
        now = utcnow()
        if row.last_used_at is None or (now - _aware(row.last_used_at)).total_seconds() > 60:
            conn.execute(_TOKEN_TOUCH, {"token_id": row.id, "now": now})
            conn.commit()
        return Identity(row.name, Role(row.role), row.user_id)


def _aware(moment):
    from datetime import timezone

    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# --- mode -----------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mode(host: str, users_exist: bool) -> Mode:
    """local: loopback bind and no users (no login, a banner says so); accounts: login
    required; open: a non-loopback bind with no users that the operator forced with
    --no-auth. A non-loopback bind with no users and no --no-auth does not start."""
    if users_exist:
        return "accounts"
    return "local" if is_loopback(host) else "open"


def startup_problem(host: str, no_auth: bool, users_exist: bool) -> Optional[str]:
    """Why the web app must not start on this address, or None."""
    if users_exist or is_loopback(host) or no_auth:
        return None
    return (
        f"refusing to serve {host} with no user accounts: anyone who reaches it could train, read and "
        "delete everything.\nAdd an admin first:\n    studio user add NAME --role admin\n"
        "then start again (users log in at /login). Or serve only this machine with --host 127.0.0.1. "
        "To run without any login anyway, pass --no-auth."
    )


# --- audit ----------------------------------------------------------------------------


_AUDIT = AuditEvent.__table__.insert()


def record(engine: Engine, actor: str, action: str, target: str = "", outcome: str = "ok", ip: str = "") -> None:
    # The gate calls this after every audited request: one prepared INSERT, no ORM.
    with engine.begin() as conn:
        conn.execute(_AUDIT, {"at": utcnow(), "actor": actor[:64], "action": action[:64], "target": target[:500],
                              "outcome": outcome[:16], "ip": ip[:64]})


def audit_log(engine: Engine, limit: int = 200, offset: int = 0, action: Optional[str] = None) -> list[AuditPublic]:
    """The newest entries first, optionally of one action."""
    with session_scope(engine) as session:
        query = select(AuditEvent)
        if action:
            query = query.where(AuditEvent.action == action)
        rows = session.exec(query.order_by(AuditEvent.id.desc()).offset(offset).limit(limit))
        return [AuditPublic.model_validate(r, from_attributes=True) for r in rows]
