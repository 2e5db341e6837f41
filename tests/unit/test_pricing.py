"""domain/pricing.py on Stripe's documented examples (docs cited in the module)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.errors import InvalidInputError
from domain.pricing import (
    CURRENT_VALUE,
    RUN_RATE,
    Price,
    Tier,
    TransformQuantity,
    currency_exponent,
    forecast_quantity,
    line_amount,
    major_units,
)

D = Decimal
TIERS = (
    Tier(100, D(10), D(0)),
    Tier(1000, D(5), D(200)),
    Tier(None, D(1), D(0)),
)


def test_decimal_unit_amount_rounds_once_per_line() -> None:
    # Stripe's example: 0.05 cents x 30 = 1.5, billed 2 cents.
    price = Price("p", "usd", unit_amount_decimal=D("0.05"))
    assert line_amount(price, 30) == 2
    assert line_amount(price, 29) == 1  # 1.45
    assert line_amount(price, 0) == 0
    assert line_amount(price, -5) == 0


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [(0, 0), (100, 1000), (120, 1000 + 200 + 100), (1500, 1000 + 200 + 4500 + 500)],
)
def test_graduated(quantity: int, amount: int) -> None:
    price = Price("p", "usd", "tiered", tiers_mode="graduated", tiers=TIERS)
    assert line_amount(price, quantity) == amount


@pytest.mark.parametrize(("quantity", "amount"), [(50, 500), (100, 1000), (120, 800), (1500, 1500)])
def test_volume(quantity: int, amount: int) -> None:
    price = Price("p", "usd", "tiered", tiers_mode="volume", tiers=TIERS)
    assert line_amount(price, quantity) == amount


def test_transform_quantity_rounds_up_or_down() -> None:
    # Stripe's example: 150 minutes at 10 USD an hour, rounded up, is 30 USD.
    up = Price(
        "p", "usd", unit_amount_decimal=D(1000), transform_quantity=TransformQuantity(60, "up")
    )
    down = Price(
        "p", "usd", unit_amount_decimal=D(1000), transform_quantity=TransformQuantity(60, "down")
    )
    assert line_amount(up, 150) == 3000
    assert line_amount(down, 150) == 2000
    assert line_amount(up, 120) == line_amount(down, 120) == 2000


def test_prices_stripe_refuses_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        Price(
            "p",
            "usd",
            "tiered",
            tiers_mode="graduated",
            tiers=TIERS,
            transform_quantity=TransformQuantity(5, "up"),
        )
    with pytest.raises(InvalidInputError):
        Price("p", "usd", "tiered", tiers_mode="graduated", tiers=(Tier(5),))
    unread = Price("p", "usd", "tiered", tiers_mode="graduated")  # tiers not expanded
    assert unread.tiers_unread
    with pytest.raises(ValueError, match="tiers were not read"):
        line_amount(unread, 1)
    with pytest.raises(InvalidInputError):
        TransformQuantity(0, "up")


def test_currency_exponents_and_major_units() -> None:
    assert [currency_exponent(c) for c in ("usd", "JPY", "kwd", "eur", "bif", "tnd")] == [
        2,
        0,
        3,
        2,
        0,
        3,
    ]
    assert major_units(1234, "usd") == "12.34"
    assert major_units(1234, "jpy") == "1234"
    assert major_units(1230, "kwd") == "1.230"
    assert major_units(5, "usd") == "0.05"
    assert major_units(0, "bhd") == "0.000"


def test_forecast_run_rate_and_current_value() -> None:
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)
    mid = datetime(2026, 3, 11, tzinfo=UTC)  # a third of the period
    assert forecast_quantity("sum", D(100), start, end, mid).quantity == D(300)
    assert forecast_quantity("count", D(10), start, end, mid).method == RUN_RATE
    assert forecast_quantity("max", D(7), start, end, mid).quantity == D(7)
    assert forecast_quantity("last", D(7), start, end, mid).method == CURRENT_VALUE
    assert forecast_quantity("sum", D(100), start, end, end).quantity == D(100)
    assert forecast_quantity("sum", D(0), start, end, start).quantity == D(0)
