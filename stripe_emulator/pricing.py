"""Line amounts from a price and a quantity: per-unit, graduated and volume tiers.

Amounts are computed in Decimal (prices may carry fractional minor units in
``unit_amount_decimal``) and rounded half-up to whole minor units once per line.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from stripe_emulator.state import Obj


def line_amount(price: Obj, quantity: int) -> int:
    if price["billing_scheme"] != "tiered":
        total = Decimal(price["unit_amount_decimal"] or 0) * quantity
    elif price["tiers_mode"] == "volume":
        total = _volume(price["tiers"], quantity)
    else:
        total = _graduated(price["tiers"], quantity)
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


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
