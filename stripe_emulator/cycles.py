"""Where a subscription stands in its billing cycle (shared by all its items)."""

from __future__ import annotations

from stripe_emulator.periods import period_containing
from stripe_emulator.state import Obj


def interval_of(sub: Obj) -> tuple[str, int]:
    recurring = sub["items"]["data"][0]["price"]["recurring"]
    return recurring["interval"], recurring["interval_count"]


def current_period(sub: Obj) -> tuple[int, int]:
    item = sub["items"]["data"][0]
    return item["current_period_start"], item["current_period_end"]


def next_period(sub: Obj, start: int) -> tuple[int, int]:
    """The period that begins at ``start`` (a boundary the subscription reached)."""
    interval, count = interval_of(sub)
    anchor = sub["billing_cycle_anchor"]
    if start < anchor:
        return start, anchor
    return period_containing(anchor, interval, count, start)


def set_period(sub: Obj, period: tuple[int, int]) -> None:
    for item in sub["items"]["data"]:
        item["current_period_start"], item["current_period_end"] = period
