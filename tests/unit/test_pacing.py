"""The token bucket that paces reconciliation's Stripe reads, driven by a fake clock."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from domain.pacing import TokenBucket


class FakeTime:
    """A clock that stands still until a test (or a sleep) moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_full_bucket_lets_its_burst_through_then_one_token_per_interval() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, burst=3, clock=t.clock, sleep=t.sleep)
    waits = [bucket.reserve() for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])


def test_the_rate_holds_over_time_and_a_pause_saves_at_most_the_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(20, burst=2, clock=t.clock, sleep=t.sleep)
    for _ in range(102):
        bucket.acquire()
    # 2 from the full bucket, then 100 more at 20/s: five seconds, not less.
    assert t.now - 1000.0 == pytest.approx(5.0)
    t.now += 60  # idle for a minute: the bucket refills to its burst, not to 1,200
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0, 0, 0.05])


def test_in_any_second_at_most_burst_plus_rate_calls_start() -> None:
    t = FakeTime()
    bucket = TokenBucket(95, burst=4, clock=t.clock, sleep=t.sleep)
    starts = []
    for _ in range(500):
        bucket.acquire()
        starts.append(t.now)
        t.now += 0.0037  # the call itself takes a little while
    for first in starts:
        assert sum(1 for s in starts if first <= s < first + 1.0) <= 4 + 95


def test_threads_share_one_bucket_each_waiting_for_its_own_token() -> None:
    t = FakeTime()  # stands still: every wait is what the reservation made it
    bucket = TokenBucket(50, burst=5, clock=t.clock, sleep=t.sleep)
    go = threading.Barrier(8)

    def take(_: int) -> list[float]:
        go.wait()  # all eight ask at once
        return [bucket.reserve() for _ in range(25)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        waits = [wait for taken in pool.map(take, range(8)) for wait in taken]
    # 200 tokens across 8 threads: 5 at once, then one every 20 ms, none given twice.
    expected = [max(0, (i + 1 - 5) / 50) for i in range(200)]
    assert sorted(waits) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [
        (0, 1, "rate must be positive, got 0"),
        (-5, 1, "rate must be positive, got -5"),
        (10, 0, "burst must be at least 1, got 0"),
    ],
)
def test_a_bucket_that_could_never_pace_is_refused(rate: float, burst: int, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        TokenBucket(rate, burst)
    assert str(refused.value) == message
