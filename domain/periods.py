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
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from domain.errors import InvalidInputError


@dataclass(frozen=True, order=True)
class BillingPeriod:
    """A half-open interval ``[start, end)`` with a stable, sortable key."""

    start: datetime
    end: datetime
    anchored: bool = False

    @property
    def key(self) -> str:
        # Formatted by hand: strftime writes year 888 as "888", not "0888".
        s = self.start
        month = f"{s.year:04d}-{s.month:02d}"
        if self.anchored:
            return f"{month}-{s.day:02d}T{s.hour:02d}:{s.minute:02d}:{s.second:02d}Z"
        return month


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


def next_minute(moment: datetime) -> datetime:
    """The first whole minute at or after ``moment``."""
    floor = minute_floor(moment)
    return floor if floor == moment else floor + timedelta(minutes=1)


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def period_within(
    period: BillingPeriod, starts_at: datetime | None, ends_at: datetime | None
) -> BillingPeriod:
    """``period`` cut to a billing cycle running from ``starts_at`` until ``ends_at``.

    The first period of a cycle starts with it (its key is that moment, to the
    second); the last one ends where the next cycle starts.
    """
    start, end = period.start, period.end
    if starts_at is not None and starts_at > start:
        start = starts_at
    if ends_at is not None and ends_at < end:
        end = ends_at
    if (start, end) == (period.start, period.end):
        return period
    # A calendar month keeps its key when only its end moves; any other start names itself.
    anchored = period.anchored or start != period.start
    return BillingPeriod(start, end, anchored=anchored)


# The months anyone can name: every period StripeMeter bills starts in them. Wide
# enough for any real invoice (Stripe Billing began in the 2010s), narrow enough
# that a period's end, a month's key and its arithmetic stay inside datetime's
# years 1-9999 and print as four digits.
FIRST_YEAR = 2000
LAST_YEAR = 2100
MONTHS = f"{FIRST_YEAR}-01 to {LAST_YEAR}-12"
MONTH_KEY = re.compile(r"([0-9]{4})-([0-9]{2})", re.ASCII)
START_KEY = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z", re.ASCII
)


def month_from_key(key: str, field: str = "period") -> BillingPeriod:
    """The calendar month ``YYYY-MM`` (UTC) that ``key`` names, inside the billed years."""
    match = MONTH_KEY.fullmatch(key)
    if match is None:
        raise InvalidInputError(field, "must be a month as YYYY-MM, e.g. 2026-03")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise InvalidInputError(field, "must be a month as YYYY-MM: the month is 01 to 12")
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidInputError(field, f"must be a month from {MONTHS}")
    return period_of(datetime(year, month, 1, tzinfo=UTC))


def named_period(
    key: str,
    anchor: datetime | None,
    customer: str,
    period_at: Callable[[datetime], BillingPeriod] | None = None,
) -> BillingPeriod:
    """The one period of ``customer`` that ``key`` names, by the key the API reports it with.

    A period of calendar months is named ``YYYY-MM``; one counted from a Stripe
    anchor (or starting a new cycle) by its start, ``YYYY-MM-DDTHH:MM:SSZ``.
    ``period_at`` is the customer's own rule (their cycles, see
    domain/customers.py); without it, periods count from ``anchor`` alone. A
    key for a period this customer cannot have (a calendar month of an anchored
    customer, a moment that starts none of its periods) is refused with what its
    periods look like, never answered with an empty period of another calendar.
    """
    rule = period_at or (lambda moment: period_of(moment, anchor))
    start = _start_of(key)
    if start is None:
        month = None
        try:
            month = month_from_key(key)
        except InvalidInputError:
            if anchor is None:
                raise
        if month is not None:
            if rule(month.start).key == key:
                return rule(month.start)
            if anchor is None:
                return month
        assert anchor is not None
        raise InvalidInputError(
            "period",
            f"customer {customer} is billed from its Stripe anchor {_at(anchor)}; name a"
            f" period by its start, e.g. {_starting_in(key, anchor).key}",
        )
    period = rule(start)
    if period.key == key:
        return period
    if anchor is None and not period.anchored:
        raise InvalidInputError(
            "period",
            f"customer {customer} is billed in calendar months (UTC); name a period"
            f" as YYYY-MM, e.g. {key[:7]}",
        )
    raise InvalidInputError(
        "period",
        f"is not the start of a billing period of customer {customer}: its periods start"
        f" each month from its Stripe anchor{_anchor_text(anchor)}; the one holding {key}"
        f" starts {period.key}",
    )


def _anchor_text(anchor: datetime | None) -> str:
    return f" {_at(anchor)}" if anchor is not None else ""


def _starting_in(key: str, anchor: datetime) -> BillingPeriod:
    """The anchored period starting in the month ``key`` names (else the anchor's own)."""
    try:
        month = month_from_key(key)
    except InvalidInputError:
        return period_of(anchor, anchor)
    period = period_of(month.start, anchor)
    return period if period.start >= month.start else period_of(period.end, anchor)


def _start_of(key: str) -> datetime | None:
    """The moment a ``YYYY-MM-DDTHH:MM:SSZ`` key names, or None when it names none."""
    match = START_KEY.fullmatch(key)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidInputError("period", f"must start in a month from {MONTHS}")
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise InvalidInputError("period", f"{key} is not a real date and time") from None


def _at(anchor: datetime) -> str:
    """The anchor as a period key shows it: to the second, four-digit year, UTC."""
    return period_of(anchor, anchor).key
