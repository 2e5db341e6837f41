"""A token bucket: calls to an outside system at a steady pace, shared by many threads.

Stripe limits each account to a number of requests per second
(docs/RECONCILIATION.md, "Pace"); a caller that goes over is answered 429
and the SDK sleeps before it retries. Pacing the calls below the limit
instead makes no 429 of the caller's own: each call first takes a token,
and tokens come back at ``rate`` per second, at most ``burst`` of them saved
up. Others using the same account can still cause a 429; ``hold`` then keeps
every caller of the bucket back for the wait Stripe asked (``paced_reads.py``).

A thread that finds no token reserves the next one (the count goes below
zero) and sleeps until it is due, outside the lock; so threads queue in the
order they asked, each at its own moment, and over any stretch of T seconds
at most ``burst + rate × T`` calls start. The clock and the sleep are
injected, so tests drive the bucket with a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """At most ``burst + rate × T`` acquisitions in any T seconds, fairly across threads."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._at = clock()

    def reserve(self) -> float:
        """Take the next token; the seconds to wait before it is due (0: now)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def hold(self, seconds: float) -> None:
        """No token is due before ``seconds`` from now (Stripe's Retry-After after a 429).

        Tokens already reserved keep their moments, so calls never start closer
        together than the pace: a hold only ever moves the next token later.
        """
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens = min(self._tokens, 1 - seconds * self.rate)

    def acquire(self) -> None:
        """Wait for a token (sleeping outside the lock, so other threads queue meanwhile)."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
