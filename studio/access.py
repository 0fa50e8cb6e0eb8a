"""Who may call what: roles, and the FastAPI dependency every /api and /v1 route declares.

Every route states its rule with `dependencies=[Depends(require(Role.trainer))]` (or
`require_user()` for any logged-in user, `public()` for the login page and health).
Admins pass every rule. The permission-matrix test fails on a route without a rule.
"""

from __future__ import annotations

import enum
from typing import Callable

from fastapi import Request


class Role(str, enum.Enum):
    admin = "admin"
    trainer = "trainer"
    rater = "rater"


def require(*roles: Role) -> Callable[[Request], None]:
    """A dependency that lets the listed roles (and admins) through."""
    allowed = frozenset(roles) | {Role.admin}

    def check(request: Request) -> None:  # filled in by the accounts work
        return None

    check.studio_roles = allowed  # type: ignore[attr-defined]
    return check
