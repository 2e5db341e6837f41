"""What a line of a customer's bill costs: the port between pricing and alerts.

Pricing (``domain/pricing.py`` with the prices read from Stripe) answers it;
spend alerts ask it. Amounts are integer minor units of ``currency`` (cents for
USD, yen for JPY, thousandths for the three-decimal currencies), rounded the
way Stripe rounds an invoice line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True)
class LineCost:
    """One customer × metric line for one billing period."""

    currency: str
    price_ids: tuple[str, ...]  # every subscription item's price on the metric's meter
    amount_so_far: int  # as Stripe would bill the quantity so far, summed over the items
    forecast_quantity: Decimal  # the quantity expected at period end (see ``method``)
    forecast_amount: int
    method: str  # how the forecast was made, e.g. "run_rate"


class SpendSource(Protocol):
    def line_cost(
        self,
        tenant_id: UUID,
        customer_ref: str,
        metric: str,
        quantity: Decimal,
        period_start: datetime,
        period_end: datetime,
        now: datetime,
    ) -> LineCost | None:
        """The line's cost for ``quantity`` counted so far; None when no Stripe price bills it."""
        ...
