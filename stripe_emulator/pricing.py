"""Line amounts from a price and a quantity: per-unit, graduated and volume tiers.

Amounts are computed in Decimal (prices may carry fractional minor units in
``unit_amount_decimal``) and rounded half-up to whole minor units once per line,
as Stripe's "Decimal amounts" guide says. A per-unit price's
``transform_quantity`` divides the quantity and rounds it up or down to a whole
number first. All of it is in the currency's minor units, so the currency's
exponent (JPY 0, USD 2, KWD 3) changes nothing here: it only says how an amount
reads in major units. Written apart from the service's domain/pricing.py on
purpose, so that tests comparing the two can fail.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from stripe_emulator.state import Obj


def line_amount(price: Obj, quantity: int) -> int:
    if price["billing_scheme"] != "tiered":
        if transform := price.get("transform_quantity"):
            quantity = _transformed(transform, quantity)
        total = Decimal(price["unit_amount_decimal"] or 0) * quantity
    elif price["tiers_mode"] == "volume":
        total = _volume(price["tiers"], quantity)
    else:
        total = _graduated(price["tiers"], quantity)
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _transformed(transform: Obj, quantity: int) -> int:
    rounding = ROUND_CEILING if transform["round"] == "up" else ROUND_FLOOR
    return int((Decimal(quantity) / transform["divide_by"]).to_integral_value(rounding=rounding))


def _tier_cost(tier: Obj, units: int) -> Decimal:
    unit = Decimal(tier["unit_amount_decimal"] or 0)
    flat = Decimal(tier["flat_amount_decimal"] or 0)
    return unit * units + flat


def _volume(tiers: list[Obj], quantity: int) -> Decimal:
    """Every unit at the rate of the tier the total quantity falls in."""
    for tier in tiers:
        if tier["up_to"] is None or quantity <= tier["up_to"]:
            return _tier_cost(tier, quantity)
    raise AssertionError("the last tier is unbounded")


def _graduated(tiers: list[Obj], quantity: int) -> Decimal:
    """Each slice of units at its own tier's rate; a tier's flat fee once it is reached."""
    total, lower = Decimal(0), 0
    for tier in tiers:
        if quantity <= lower:
            break
        upper = quantity if tier["up_to"] is None else min(quantity, tier["up_to"])
        total += _tier_cost(tier, upper - lower)
        lower = upper
    return total
