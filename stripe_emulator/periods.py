"""Billing interval arithmetic, the way Stripe counts periods.

Every period boundary is computed from the billing cycle anchor, not from the
previous boundary: an anchor on Jan 31 gives Feb 28 (29), then Mar 31 — the
day clamps to the month's end without drifting.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

INTERVALS = ("day", "week", "month", "year")


def boundary(anchor: int, interval: str, count: int, n: int) -> int:
    """The start of the ``n``-th period after ``anchor`` (``n`` may be negative)."""
    start = datetime.fromtimestamp(anchor, UTC)
    if interval == "day":
        return int((start + timedelta(days=count * n)).timestamp())
    if interval == "week":
        return int((start + timedelta(weeks=count * n)).timestamp())
    months = count * n * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def period_containing(anchor: int, interval: str, count: int, at: int) -> tuple[int, int]:
    """The ``[start, end)`` period, counted from ``anchor``, that contains ``at``."""
    # Estimate the index from the average length, then correct: cheap and exact.
    approx = {"day": 86_400, "week": 604_800, "month": 2_629_746, "year": 31_556_952}
    n = (at - anchor) // (approx[interval] * count)
    while boundary(anchor, interval, count, n) > at:
        n -= 1
    while boundary(anchor, interval, count, n + 1) <= at:
        n += 1
    return boundary(anchor, interval, count, n), boundary(anchor, interval, count, n + 1)
