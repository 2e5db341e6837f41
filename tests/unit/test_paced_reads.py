"""Paced reads: every attempt takes a token, a 429 holds the pace for its Retry-After,
a passing failure is retried by its thread, and a read refused ``ATTEMPTS`` times is
raised with how often, never guessed."""

from __future__ import annotations

import pytest

from domain.paced_reads import ATTEMPTS, MAX_WAIT, PacedReads
from domain.pacing import TokenBucket
from domain.stripe_port import (
    StripeRateLimitedError,
    StripeRejectedError,
    StripeUnavailableError,
)
from tests.unit.test_pacing import FakeTime


class Stripe:
    """Answers 429 (with ``retry_after``) ``refusals`` times, then a total; notes when asked."""

    def __init__(self, t: FakeTime, refusals: int, retry_after: float | None) -> None:
        self.t, self.refusals, self.retry_after = t, refusals, retry_after
        self.asked_at: list[float] = []

    def read(self) -> int:
        self.asked_at.append(self.t.now)
        if len(self.asked_at) <= self.refusals:
            raise StripeRateLimitedError("Request rate limit exceeded", self.retry_after)
        return 42


def _reads(t: FakeTime, rate: float = 10) -> PacedReads:
    return PacedReads(TokenBucket(rate, burst=1, clock=t.clock, sleep=t.sleep))


def test_a_refused_read_is_tried_again_after_retry_after_and_at_the_pace() -> None:
    t = FakeTime()
    stripe = Stripe(t, refusals=2, retry_after=3)
    assert _reads(t).read(stripe.read) == 42
    assert [at - 1000 for at in stripe.asked_at] == pytest.approx([0, 3, 6])


def test_without_retry_after_the_wait_doubles_from_a_second() -> None:
    t = FakeTime()
    stripe = Stripe(t, refusals=3, retry_after=None)
    assert _reads(t).read(stripe.read) == 42
    assert [at - 1000 for at in stripe.asked_at] == pytest.approx([0, 1, 3, 7])


def test_a_hold_delays_every_read_of_the_run_not_only_the_refused_one() -> None:
    t = FakeTime()
    reads = _reads(t)
    assert reads.read(Stripe(t, refusals=1, retry_after=2).read) == 42
    other = Stripe(t, refusals=0, retry_after=None)
    reads.read(other.read)
    # The retry went at 1002; the next read keeps the pace after it (1/10 s).
    assert other.asked_at == pytest.approx([1002.1])


def test_a_read_refused_every_time_is_raised_with_how_often() -> None:
    t = FakeTime()
    stripe = Stripe(t, refusals=100, retry_after=1)
    with pytest.raises(StripeRateLimitedError, match=f"429 on {ATTEMPTS} attempt"):
        _reads(t).read(stripe.read)
    assert len(stripe.asked_at) == ATTEMPTS


def test_a_wait_longer_than_a_run_should_take_is_not_waited_for() -> None:
    t = FakeTime()
    stripe = Stripe(t, refusals=1, retry_after=MAX_WAIT + 1)
    with pytest.raises(StripeRateLimitedError, match="429 on 1 attempt"):
        _reads(t).read(stripe.read)
    assert stripe.asked_at == [1000.0]


def test_a_passing_failure_is_retried_by_its_thread_alone_and_a_refusal_never() -> None:
    t = FakeTime()
    reads = PacedReads(TokenBucket(10, burst=1, clock=t.clock, sleep=t.sleep), sleep=t.sleep)
    asked: list[float] = []

    def unavailable_twice() -> int:
        asked.append(t.now)
        if len(asked) <= 2:
            raise StripeUnavailableError("503")
        return 7

    assert reads.read(unavailable_twice) == 7
    assert [at - 1000 for at in asked] == pytest.approx([0, 1, 3])

    refused: list[float] = []

    def rejected() -> int:
        refused.append(t.now)
        raise StripeRejectedError("no such meter")

    with pytest.raises(StripeRejectedError):
        reads.read(rejected)
    assert len(refused) == 1
