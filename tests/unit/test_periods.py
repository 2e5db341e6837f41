from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.errors import InvalidInputError
from domain.periods import month_from_key, named_period, period_of


def test_a_moment_falls_in_its_calendar_month_in_utc() -> None:
    period = period_of(datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert period.key == "2026-03"
    assert period.start == datetime(2026, 3, 1, tzinfo=UTC)
    assert period.end == datetime(2026, 4, 1, tzinfo=UTC)


def test_the_end_is_exclusive_and_december_rolls_into_the_next_year() -> None:
    assert period_of(datetime(2026, 4, 1, tzinfo=UTC)).key == "2026-04"
    december = period_of(datetime(2026, 12, 10, tzinfo=UTC))
    assert december.end == datetime(2027, 1, 1, tzinfo=UTC)


def test_offsets_are_converted_to_utc_before_choosing_the_month() -> None:
    # 00:30 on April 1st in UTC+2 is still March 31st in UTC.
    moment = datetime(2026, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert period_of(moment).key == "2026-03"


def test_period_keys_parse_back_and_garbage_is_refused() -> None:
    assert month_from_key("2026-02").end == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(InvalidInputError) as refused:
        month_from_key("2026-13")
    assert refused.value.field == "period"


ANCHOR = datetime(2026, 1, 31, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("2026-13", "must be a month as YYYY-MM: the month is 01 to 12"),
        ("2026-00", "must be a month as YYYY-MM: the month is 01 to 12"),
        ("0888-10", "must be a month from 2000-01 to 2100-12"),
        ("1999-12", "must be a month from 2000-01 to 2100-12"),
        ("2101-01", "must be a month from 2000-01 to 2100-12"),
        ("9999-12", "must be a month from 2000-01 to 2100-12"),
        ("2026-3", "must be a month as YYYY-MM, e.g. 2026-03"),
        ("\uff12\uff10\uff12\uff16-03", "must be a month as YYYY-MM, e.g. 2026-03"),  # fullwidth
        ("2026-03 ", "must be a month as YYYY-MM, e.g. 2026-03"),
        ("", "must be a month as YYYY-MM, e.g. 2026-03"),
    ],
)
def test_a_month_is_four_ascii_digits_a_dash_two_inside_the_billed_years(
    key: str, reason: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        month_from_key(key, "month")
    assert (refused.value.field, refused.value.reason) == ("month", reason)


def test_the_first_and_last_billed_months_are_named_and_keyed_with_four_digits() -> None:
    assert month_from_key("2000-01").start == datetime(2000, 1, 1, tzinfo=UTC)
    assert month_from_key("2100-12").end == datetime(2101, 1, 1, tzinfo=UTC)
    # strftime writes year 888 as "888"; a key is always four digits.
    assert period_of(datetime(888, 10, 3, tzinfo=UTC)).key == "0888-10"
    early = period_of(datetime(888, 10, 8, tzinfo=UTC), datetime(888, 1, 5, 9, tzinfo=UTC))
    assert early.key == "0888-10-05T09:00:00Z"


def test_a_calendar_customer_names_a_period_by_its_month_only() -> None:
    assert named_period("2026-03", None, "cus_1") == period_of(datetime(2026, 3, 9, tzinfo=UTC))
    with pytest.raises(InvalidInputError) as refused:
        named_period("2026-03-01T00:00:00Z", None, "cus_1")
    assert (refused.value.field, refused.value.reason) == (
        "period",
        "customer cus_1 is billed in calendar months (UTC); name a period as YYYY-MM, e.g. 2026-03",
    )


def test_an_anchored_customer_names_a_period_by_its_start() -> None:
    period = named_period("2026-02-28T10:30:00Z", ANCHOR, "cus_1")
    assert (period.start, period.end) == (
        datetime(2026, 2, 28, 10, 30, tzinfo=UTC),
        datetime(2026, 3, 31, 10, 30, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (
            "2026-02",  # a calendar month it never has: the example starts in that month
            "customer cus_1 is billed from its Stripe anchor 2026-01-31T10:30:00Z;"
            " name a period by its start, e.g. 2026-02-28T10:30:00Z",
        ),
        (
            "March",
            "customer cus_1 is billed from its Stripe anchor 2026-01-31T10:30:00Z;"
            " name a period by its start, e.g. 2026-01-31T10:30:00Z",
        ),
        (
            "2026-03-01T00:00:00Z",
            "is not the start of a billing period of customer cus_1: its periods start each"
            " month from its Stripe anchor 2026-01-31T10:30:00Z; the one holding"
            " 2026-03-01T00:00:00Z starts 2026-02-28T10:30:00Z",
        ),
        ("2026-02-30T10:30:00Z", "2026-02-30T10:30:00Z is not a real date and time"),
        ("9999-12-31T10:30:00Z", "must start in a month from 2000-01 to 2100-12"),
        ("0888-10-31T10:30:00Z", "must start in a month from 2000-01 to 2100-12"),
    ],
)
def test_an_anchored_customer_cannot_name_a_period_it_cannot_have(key: str, reason: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        named_period(key, ANCHOR, "cus_1")
    assert (refused.value.field, refused.value.reason) == ("period", reason)
