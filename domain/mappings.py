"""How a local metric maps onto a Stripe meter, and which pairs can agree.

A Stripe ``count`` meter counts events, not values, so it cannot take deltas;
a ``sum`` meter takes deltas (our ``sum`` and ``count`` push them); a ``last``
meter takes the current value (our ``last`` and ``max`` push it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from domain.errors import InvalidInputError
from domain.meters import Aggregation


class PushMode(StrEnum):
    DELTA = "delta"  # push counter − confirmed pushes
    VALUE = "value"  # push the current value whenever it changes


PUSH_MODE = {
    Aggregation.SUM: PushMode.DELTA,
    Aggregation.COUNT: PushMode.DELTA,
    Aggregation.MAX: PushMode.VALUE,
    Aggregation.LAST: PushMode.VALUE,
}
STRIPE_FORMULA = {PushMode.DELTA: "sum", PushMode.VALUE: "last"}


def required_formula(aggregation: Aggregation) -> str:
    return STRIPE_FORMULA[PUSH_MODE[aggregation]]


def check_formula(aggregation: Aggregation, stripe_formula: str) -> None:
    """Refuse a Stripe meter whose formula cannot hold this metric's numbers."""
    needed = required_formula(aggregation)
    if stripe_formula == needed:
        return
    if stripe_formula == "count":
        reason = (
            "is a Stripe 'count' meter: it counts events, not values, so it cannot take"
            f" the deltas StripeMeter pushes; use a '{needed}' meter"
        )
    else:
        reason = (
            f"has formula {stripe_formula!r}; a local {aggregation.value!r} metric needs a"
            f" {needed!r} meter"
        )
    raise InvalidInputError("stripeMeter", reason)


@dataclass(frozen=True)
class MeterMapping:
    metric: str
    stripe_meter_id: str
    stripe_event_name: str
    stripe_formula: str
    customer_key: str = "stripe_customer_id"
    value_key: str = "value"
    # Shadow mode: the same pushes, in parallel, to a Stripe test account.
    shadow_meter_id: str | None = None
    shadow_event_name: str | None = None
