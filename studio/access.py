"""Who may call what: roles, and the FastAPI dependency every /api and /v1 route declares.

Every route states its rule with `dependencies=[Depends(require(Role.trainer))]`, or
`require_user()` for any logged-in user, or `public()` for health and login. Admins pass
every rule. The gate (studio/gate.py) has already put the caller's identity on the
request; these only compare roles. The permission-matrix test fails on a route without a
rule (tests/security/test_permissions.py).
"""

from __future__ import annotations

import enum
from typing import Callable

from fastapi import HTTPException, Request


class Role(str, enum.Enum):
    admin = "admin"
    trainer = "trainer"
    rater = "rater"


ALL_ROLES = frozenset(Role)


def identity_of(request: Request):
    """The caller (studio.services.accounts.Identity), or None when not logged in."""
    return getattr(request.state, "identity", None)


def _rule(allowed: frozenset[Role] | None) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if allowed is None:
            return
        identity = identity_of(request)
        if identity is None:
            raise HTTPException(401, "log in first (a session cookie from /login, or Authorization: Bearer TOKEN)")
        if identity.role not in allowed:
            raise HTTPException(403, f"a {identity.role.value} may not do this")

    check.studio_roles = allowed  # type: ignore[attr-defined]  # read by the permission matrix
    return check


def require(*roles: Role) -> Callable[[Request], None]:
    """A dependency that lets the listed roles (and admins) through."""
    return _rule(frozenset(roles) | {Role.admin})


def require_user() -> Callable[[Request], None]:
    """Any logged-in user, whatever the role."""
    return _rule(ALL_ROLES)


def public() -> Callable[[Request], None]:
    """No login needed (health checks, the login page)."""
    return _rule(None)


def allows(allowed: frozenset[Role] | None, identity) -> bool:
    """Whether a rule admits this identity (None: not logged in)."""
    if allowed is None:
        return True
    return identity is not None and identity.role in allowed
