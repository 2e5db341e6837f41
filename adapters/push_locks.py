"""Push locks every worker process sees: PostgreSQL session-level advisory locks.

Why advisory locks: PostgreSQL already holds the event store every worker
shares, a try-lock is one round trip, and a lock belongs to its connection —
a worker killed mid-push loses its connection and PostgreSQL drops the lock
with it, so no lease, timeout or cleanup job is needed (Dramatiq's rate
limiters would need both: a Redis mutex outlives a killed holder until its
TTL runs out).

Keys use the two-int4 form ``pg_try_advisory_lock(PUSH_LOCK_CLASS, hash32)``.
PostgreSQL files that form under a different ``objsubid`` (2) than the
single-bigint form (1) used by ``SCHEMA_LOCK_KEY`` in adapters/persistence.py,
so the two can never meet, and the push locks are easy to list in
``pg_locks`` (``classid = PUSH_LOCK_CLASS AND objsubid = 2``). The price is a
32-bit hash: two different customer × meter keys may share a lock. That only
ever makes a push report ``busy`` a sweep early (about one in 4·10⁹ per pair
held at the same moment); it never lets two calls for one key overlap.

A session lock must be released on the connection that took it, so each
``hold`` keeps one pooled connection for its whole duration (the Stripe call
included): the pool is sized for the threads that push.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from domain.push_locks import PushLockKey

log = logging.getLogger(__name__)

PUSH_LOCK_CLASS = 0x53_4D_50_4C  # any constant; "SMPL": StripeMeter push lock

_TRY = "SELECT k, pg_try_advisory_lock(%s, k) FROM unnest(%s::int4[]) AS k"  # one round trip
_RELEASE = "SELECT k, pg_advisory_unlock(%s, k) FROM unnest(%s::int4[]) AS k"


def lock_number(key: PushLockKey) -> int:
    """A stable signed 32-bit number for a key: the same in every process and release."""
    text = "\x1f".join((str(key.tenant_id), key.customer_ref, key.metric, key.target))
    digest = hashlib.blake2b(text.encode(), digest_size=4, person=b"sm-push-lock").digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryPushLocks:
    """``PushLocks`` over PostgreSQL advisory locks, shared by every process on the database."""

    def __init__(self, conninfo: str, max_connections: int = 16, wait_seconds: float = 30.0):
        # Opened on first use: most commands that open the stores never push.
        self._pool = ConnectionPool(
            conninfo,
            min_size=0,
            max_size=max_connections,
            kwargs={"autocommit": True},
            timeout=wait_seconds,
            open=False,
            name="push-locks",
        )
        self._opened = False
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, keys: Sequence[PushLockKey]) -> Iterator[set[PushLockKey]]:
        by_number: dict[int, list[PushLockKey]] = {}
        for key in dict.fromkeys(keys):
            by_number.setdefault(lock_number(key), []).append(key)
        if not by_number:
            yield set()
            return
        numbers = sorted(by_number)
        conn, taken = self._take(numbers)
        try:
            yield {key for number in taken for key in by_number[number]}
        finally:
            self._release(conn, taken)
            self._pool.putconn(conn)

    def _take(self, numbers: list[int]) -> tuple[psycopg.Connection[TupleRow], list[int]]:
        """Try every lock in one query, on a connection kept until they are released."""
        self._open()
        for attempt in (1, 2):
            conn = self._pool.getconn()
            try:
                return conn, self._try(conn, numbers)
            except psycopg.OperationalError:
                # A pooled connection broke while idle (PostgreSQL restarted, say):
                # it held nothing; replace the broken ones and try once more.
                self._pool.putconn(conn)
                if attempt == 2:
                    raise
                self._pool.check()
        raise AssertionError("unreachable")

    def _try(self, conn: psycopg.Connection[TupleRow], numbers: list[int]) -> list[int]:
        rows = conn.execute(_TRY, (PUSH_LOCK_CLASS, numbers)).fetchall()
        return [number for number, locked in rows if locked]

    def _release(self, conn: psycopg.Connection[TupleRow], numbers: list[int]) -> None:
        if not numbers:
            return
        try:
            rows = conn.execute(_RELEASE, (PUSH_LOCK_CLASS, numbers)).fetchall()
        except psycopg.OperationalError as error:
            # The connection broke while held: PostgreSQL released its locks with it,
            # and the pool throws the broken connection away.
            log.warning("push locks released with their broken connection: %s", error)
            return
        lost = [number for number, released in rows if not released]
        if lost:
            log.warning("push locks %s were no longer held when released", lost)

    def _open(self) -> None:
        with self._guard:
            if not self._opened:
                self._pool.open()
                self._opened = True

    def close(self) -> None:
        """Closing the connections releases any lock still held (none, between pushes)."""
        with self._guard:
            if self._opened:
                self._pool.close()
                self._opened = False
