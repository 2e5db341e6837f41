from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.errors import InvalidInputError
from domain.periods import period_from_key, period_of


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
    assert period_from_key("2026-02").end == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(InvalidInputError) as refused:
        period_from_key("2026-13")
    assert refused.value.field == "period"
