"""Admin UI sessions in the views' database, so that every API process finds them.

A row per sign-in, in ``sm_admin_sessions`` beside the views (SQLite's views
file or the PostgreSQL database): any API process of the deployment reads the
same rows, and a restart keeps them. Like the reconciliation reports, they are
not a projection: no rebuild or view-schema change touches them.

The row is keyed by the SHA-256 of the session id, never the id itself, so a
copy of the table (a backup, a read replica, a SQL console) holds nothing that
can be sent back as a cookie. The id is 256 random bits: a plain hash is
enough, there is nothing to guess that a slow or salted one would protect.
The CSRF token is kept as it is: each page renders it into its forms, and it
is worth nothing without the cookie.

Expired rows are deleted whenever a session is opened; a lookup ignores them
before then.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from domain.tenancy import Scope
from projections.store import ViewStore

TABLE = "sm_admin_sessions"


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


def session_hash(session_id: str) -> str:
    """What the table stores for a session id (any string a cookie may carry hashes)."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class AdminSessionStore:
    """The sessions' rows; every method takes the session id and stores only its hash."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def create_tables(self) -> None:
        with self.store.transaction() as tx:
            tx.execute(
                self.store.ddl(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                    " session_hash TEXT PRIMARY KEY, tenant_id TEXT NOT NULL,"
                    " key_id TEXT NOT NULL, scopes TEXT NOT NULL, csrf_token TEXT NOT NULL,"
                    " expires_at {timestamp} NOT NULL)"
                )
            )
            tx.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_expiry ON {TABLE} (expires_at)")

    def save(self, session_id: str, session: AdminSession, now: datetime) -> None:
        """Store a new session, deleting the expired ones in the same transaction."""
        s = self.store
        with s.transaction() as tx:
            tx.execute(f"DELETE FROM {TABLE} WHERE expires_at <= ?", (s.encode_time(now),))
            tx.execute(
                f"INSERT INTO {TABLE} (session_hash, tenant_id, key_id, scopes, csrf_token,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session_hash(session_id),
                    str(session.tenant_id),
                    str(session.key_id),
                    ",".join(sorted(session.scopes)),
                    session.csrf_token,
                    s.encode_time(session.expires_at),
                ),
            )

    def load(self, session_id: str, now: datetime) -> AdminSession | None:
        """The session, unless it is unknown, deleted or expired at ``now``."""
        s = self.store
        with s.transaction() as tx:
            rows = tx.execute(
                f"SELECT tenant_id, key_id, scopes, csrf_token, expires_at FROM {TABLE}"
                " WHERE session_hash = ? AND expires_at > ?",
                (session_hash(session_id), s.encode_time(now)),
            )
        if not rows:
            return None
        tenant_id, key_id, scopes, csrf_token, expires_at = rows[0]
        expiry = s.decode_time(expires_at)
        assert expiry is not None  # NOT NULL
        return AdminSession(
            UUID(tenant_id),
            UUID(key_id),
            frozenset(Scope(v) for v in scopes.split(",") if v),
            csrf_token,
            expiry,
        )

    def delete(self, session_id: str) -> None:
        with self.store.transaction() as tx:
            tx.execute(f"DELETE FROM {TABLE} WHERE session_hash = ?", (session_hash(session_id),))
