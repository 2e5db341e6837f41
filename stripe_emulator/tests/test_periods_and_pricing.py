"""Interval arithmetic, invoice amount math and form decoding, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stripe_emulator.forms import decode_form
from stripe_emulator.periods import boundary, period_containing
from stripe_emulator.pricing import line_amount


def ts(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


def test_month_end_anchor_clamps_without_drifting() -> None:
    anchor = ts(2030, 1, 31, 12)
    assert [boundary(anchor, "month", 1, n) for n in range(1, 4)] == [
        ts(2030, 2, 28, 12), ts(2030, 3, 31, 12), ts(2030, 4, 30, 12),
    ]  # fmt: skip


def test_leap_day_yearly_anchor() -> None:
    anchor = ts(2032, 2, 29)
    assert boundary(anchor, "year", 1, 1) == ts(2033, 2, 28)
    assert boundary(anchor, "year", 1, 4) == ts(2036, 2, 29)


def test_daily_weekly_and_counts() -> None:
    anchor = ts(2030, 1, 1)
    assert boundary(anchor, "day", 1, 3) == ts(2030, 1, 4)
    assert boundary(anchor, "week", 2, 1) == ts(2030, 1, 15)
    assert boundary(anchor, "month", 3, 1) == ts(2030, 4, 1)
    assert boundary(anchor, "month", 1, -1) == ts(2029, 12, 1)


@given(
    anchor=st.integers(ts(2020, 1, 1), ts(2040, 1, 1)),
    offset=st.integers(0, 10 * 366 * 86_400),
    interval=st.sampled_from(["day", "week", "month", "year"]),
    count=st.integers(1, 3),
)
def test_period_containing_brackets_the_instant(
    anchor: int, offset: int, interval: str, count: int
) -> None:
    start, end = period_containing(anchor, interval, count, anchor + offset)
    assert start <= anchor + offset < end


def test_per_unit_with_decimal_amount() -> None:
    price = {"billing_scheme": "per_unit", "unit_amount_decimal": "0.25"}
    assert line_amount(price, 10) == 3  # 2.5 rounds half up
    assert line_amount(price, 0) == 0


TIERS = [
    {"up_to": 100, "unit_amount_decimal": "10", "flat_amount_decimal": "0"},
    {"up_to": 1000, "unit_amount_decimal": "5", "flat_amount_decimal": "200"},
    {"up_to": None, "unit_amount_decimal": "1", "flat_amount_decimal": "0"},
]


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [(0, 0), (100, 1000), (120, 1000 + 200 + 100), (1500, 1000 + 200 + 4500 + 500)],
)
def test_graduated_tiers(quantity: int, amount: int) -> None:
    price = {"billing_scheme": "tiered", "tiers_mode": "graduated", "tiers": TIERS}
    assert line_amount(price, quantity) == amount


@pytest.mark.parametrize(("quantity", "amount"), [(50, 500), (100, 1000), (120, 800), (1500, 1500)])
def test_volume_tiers(quantity: int, amount: int) -> None:
    price = {"billing_scheme": "tiered", "tiers_mode": "volume", "tiers": TIERS}
    assert line_amount(price, quantity) == amount


def test_bracket_notation() -> None:
    decoded = decode_form(
        "items[0][price]=p1&items[1][price]=p2&items[1][quantity]=2"
        "&recurring[meter]=m&expand[]=a&expand[]=b&metadata[k]=&email=x%40y.z"
    )
    assert decoded == {
        "items": [{"price": "p1"}, {"price": "p2", "quantity": "2"}],
        "recurring": {"meter": "m"},
        "expand": ["a", "b"],
        "metadata": {"k": ""},
        "email": "x@y.z",
    }
