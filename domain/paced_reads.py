"""Reads from Stripe at a pace, a read that meets a 429 tried again after Retry-After.

A reconciliation run reads one summary per line, and Stripe limits the whole
account: the run paces its reads with one token bucket (``pacing.py``), but
another client of the account (the worker pushing, its scheduled run, the
team's own app) can still take a second's budget, and Stripe answers 429.
The SDK's own retries would then resend at once, 0.5–1 s apart whatever
Retry-After says, outside the pace, and give up after two.

So every read goes through ``PacedReads.read``: it takes a token, makes one
request (the caller's ``read`` turns the gateway's retries off), and on a 429
holds the bucket for Stripe's Retry-After (``FALLBACK_WAIT`` doubled per
attempt when Stripe named none), so that no new read of the run starts before
then, and tries again — the retry taking a token like any read. A passing
failure of one read (5xx, a timeout: what the SDK's retries covered) is
tried again the same way after ``FALLBACK_WAIT`` doubled per attempt, that
thread alone waiting. After ``ATTEMPTS`` tries, or when Stripe asks for a
wait longer than ``MAX_WAIT``, the last error is raised (a 429 saying how
often it came): the caller reports the line as not read (``pending``, with
that reason), never a guessed total.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from domain.pacing import TokenBucket
from domain.stripe_port import StripeRateLimitedError, StripeUnavailableError

T = TypeVar("T")

ATTEMPTS = 5  # a read refused this many times is reported unread
FALLBACK_WAIT = 1.0  # seconds, doubled per attempt, when a 429 names no Retry-After
MAX_WAIT = 30.0  # a longer Retry-After is not waited for within a run


class PacedReads:
    """Every read through one bucket, each 429 honoured and retried, ``attempts`` in all."""

    def __init__(
        self,
        pace: TokenBucket,
        attempts: int = ATTEMPTS,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.pace = pace
        self.attempts = attempts
        self._sleep = sleep

    def read(self, read: Callable[[], T]) -> T:
        """``read()`` once a token is due; again after each failure's wait, up to ``attempts``.

        A 429 holds the whole bucket (the account is busy: no read of the run helps);
        another passing failure (5xx, a timeout) waits in this thread alone.
        """
        for attempt in range(1, self.attempts + 1):
            self.pace.acquire()
            try:
                return read()
            except StripeUnavailableError as error:
                limited = isinstance(error, StripeRateLimitedError)
                wait = error.retry_after if isinstance(error, StripeRateLimitedError) else None
                if wait is None:
                    wait = FALLBACK_WAIT * 2 ** (attempt - 1)
                if attempt == self.attempts or wait > MAX_WAIT:
                    if not limited:
                        raise
                    raise StripeRateLimitedError(
                        f"{error} (429 on {attempt} attempt(s), Retry-After {wait:g} s)", wait
                    ) from error
                if limited:
                    self.pace.hold(wait)
                else:
                    self._sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")
