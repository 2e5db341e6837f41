"""One Stripe call at a time per customer × meter: the port, and its in-process form.

Stripe allows one concurrent meter-event call per customer and meter; two
workers sending for the same period at once would also race on the ledger.
A push therefore holds the lock of every customer × meter its call names,
for the whole call. Locks are tried, never waited for: a push that cannot
take one reports ``busy`` and the next sweep comes back to it, so workers
never queue behind each other nor deadlock on a batch's many keys.

``ProcessPushLocks`` holds within one process (the embedded default has only
one); a deployment of several workers uses a lock every process sees
(adapters/push_locks.py: PostgreSQL advisory locks).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import NamedTuple, Protocol
from uuid import UUID


class PushLockKey(NamedTuple):
    """What one Stripe call may not share with another: a customer's meter, per target."""

    tenant_id: UUID
    customer_ref: str
    metric: str
    target: str


class PushLocks(Protocol):
    def hold(self, keys: Sequence[PushLockKey]) -> AbstractContextManager[set[PushLockKey]]:
        """Try each key's lock without waiting; yields the keys taken, released on exit."""


class ProcessPushLocks:
    """Locks that hold among the threads of this process only."""

    def __init__(self) -> None:
        self._held: set[PushLockKey] = set()
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, keys: Sequence[PushLockKey]) -> Iterator[set[PushLockKey]]:
        with self._guard:
            taken = {key for key in keys if key not in self._held}
            self._held |= taken
        try:
            yield taken
        finally:
            with self._guard:
                self._held -= taken
