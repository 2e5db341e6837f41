"""Admin UI sessions: a server-side record per sign-in, named by a random id in a cookie.

The cookie holds only that id (never the API key): signing out deletes the
record, and nothing in the browser can be turned back into a key. Each session
keeps the tenant and scopes the key had when it signed in, and its own CSRF
token, checked on every POST form (docs/admin.md). The records are rows in the
views' database (adapters/admin_sessions.py), stored under a hash of the id: every
API process finds them, and a restart keeps them.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from adapters.admin_sessions import AdminSession, AdminSessionStore
from domain.tenancy import Principal

__all__ = ["AdminSession", "AdminSessions"]

SESSION_COOKIE = "sm_admin"
# Before sign-in there is no session: the login form's CSRF token is this cookie's value.
LOGIN_COOKIE = "sm_admin_login"
COOKIE_PATH = "/admin"
LIFETIME = timedelta(hours=8)


class AdminSessions:
    """Open, find and close sessions; each call is a database round trip (run it off the
    event loop)."""

    def __init__(self, store: AdminSessionStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def open(self, principal: Principal) -> tuple[str, AdminSession]:
        now = self._clock()
        session = AdminSession(
            principal.tenant_id,
            principal.key_id,
            frozenset(principal.scopes),
            new_token(),
            now + LIFETIME,
        )
        session_id = new_token()
        self._store.save(session_id, session, now)
        return session_id, session

    def find(self, session_id: str | None) -> AdminSession | None:
        if not session_id:
            return None
        return self._store.load(session_id, self._clock())

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._store.delete(session_id)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; an absent token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
