"""The one rule that maps a moment to a billing period.

Periods are calendar months in UTC for now. Every caller goes through
``period_of`` so that a later change (following each customer's Stripe
billing cycle anchor) happens here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from domain.errors import InvalidInputError


@dataclass(frozen=True, order=True)
class BillingPeriod:
    """A half-open interval ``[start, end)`` with a stable, sortable key."""

    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        return self.start.strftime("%Y-%m")

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def period_of(moment: datetime) -> BillingPeriod:
    """The billing period that ``moment`` (timezone-aware) falls in."""
    utc = moment.astimezone(UTC)
    start = datetime(utc.year, utc.month, 1, tzinfo=UTC)
    end = (
        datetime(utc.year + 1, 1, 1, tzinfo=UTC)
        if utc.month == 12
        else start.replace(month=utc.month + 1)
    )
    return BillingPeriod(start=start, end=end)


def period_from_key(key: str) -> BillingPeriod:
    """Parse a period key (``YYYY-MM``) as returned by ``BillingPeriod.key``."""
    try:
        start = datetime.strptime(key, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInputError("period", "must be a month as YYYY-MM") from None
    return period_of(start)
