"""The one rule that maps a moment to a billing period.

A customer not (yet) mapped to Stripe is billed in calendar months, UTC. A
mapped customer is billed in months counted from their Stripe subscription's
billing cycle anchor, the way Stripe counts them: period *n* starts at the
anchor plus *n* months, the day clamped to the month's end (an anchor on the
31st gives Feb 28, then Mar 31), always computed from the anchor so that a
short month never shifts the later ones. Counting and invoicing then cover
the same interval.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

from domain.errors import InvalidInputError


@dataclass(frozen=True, order=True)
class BillingPeriod:
    """A half-open interval ``[start, end)`` with a stable, sortable key."""

    start: datetime
    end: datetime
    anchored: bool = False

    @property
    def key(self) -> str:
        if self.anchored:
            return self.start.strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.start.strftime("%Y-%m")


def add_months(anchor: datetime, months: int) -> datetime:
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def period_of(moment: datetime, anchor: datetime | None = None) -> BillingPeriod:
    """The billing period that ``moment`` (timezone-aware) falls in."""
    utc = moment.astimezone(UTC)
    if anchor is None:
        start = datetime(utc.year, utc.month, 1, tzinfo=UTC)
        return BillingPeriod(start=start, end=add_months(start, 1))
    anchor = anchor.astimezone(UTC)
    months = (utc.year - anchor.year) * 12 + (utc.month - anchor.month)
    # The month difference is right or one too high; step back while needed.
    while add_months(anchor, months) > utc:
        months -= 1
    while add_months(anchor, months + 1) <= utc:
        months += 1
    return BillingPeriod(add_months(anchor, months), add_months(anchor, months + 1), anchored=True)


def period_from_key(key: str, anchor: datetime | None = None) -> BillingPeriod:
    """Parse a period key as returned by ``BillingPeriod.key``."""
    try:
        if "T" in key:
            start = datetime.strptime(key, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            period = period_of(start, anchor or start)
        else:
            period = period_of(datetime.strptime(key, "%Y-%m").replace(tzinfo=UTC))
    except ValueError:
        raise InvalidInputError(
            "period", "must be a month as YYYY-MM or a period start as YYYY-MM-DDTHH:MM:SSZ"
        ) from None
    if period.key != key:
        raise InvalidInputError("period", f"{key} is not the start of a billing period")
    return period
