"""Admin UI sessions: a server-side record per sign-in, named by a random id in a cookie.

The cookie holds only that id (never the API key): signing out, or the process
restarting, ends the session, and nothing in the browser can be turned back into
a key. Each session keeps the tenant and scopes the key had when it signed in, and
its own CSRF token, checked on every POST form (docs/admin.md).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from domain.tenancy import Principal, Scope

SESSION_COOKIE = "sm_admin"
# Before sign-in there is no session: the login form's CSRF token is this cookie's value.
LOGIN_COOKIE = "sm_admin_login"
COOKIE_PATH = "/admin"
LIFETIME = timedelta(hours=8)


@dataclass(frozen=True)
class AdminSession:
    tenant_id: UUID
    key_id: UUID  # checked on each page: revoking the key ends its sessions
    scopes: frozenset[Scope]
    csrf_token: str
    expires_at: datetime

    @property
    def read_only(self) -> bool:
        """A ``read`` key's session: no page offers an action to it."""
        return Scope.ADMIN not in self.scopes


class AdminSessions:
    """The sessions of this process, in memory (bounded by their lifetime)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._sessions: dict[str, AdminSession] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
            self._sessions[session_id] = session
        return session_id, session

    def find(self, session_id: str | None) -> AdminSession | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None or session.expires_at <= self._clock():
            return None
        return session

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; an absent token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
