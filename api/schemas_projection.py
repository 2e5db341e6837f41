"""The cost projection's request and answer (``/v1/usage/projection``, docs/projection.md).

Money is an integer in the currency's minor units (``amount``) beside the same
amount in major units as a decimal string with the currency's exponent
(``decimal``: "12.34" USD, "1234" JPY, "1.230" KWD); never a float.
"""

from __future__ import annotations

import msgspec


class ProjectionIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_ref: str
    period: str | None = None


class Money(msgspec.Struct, rename="camel"):
    amount: int  # minor units
    decimal: str  # major units, with the currency's exponent


class ForecastOut(msgspec.Struct, rename="camel"):
    quantity: str
    amount: Money
    method: str  # "run_rate" (sum, count) or "current_value" (max, last)


class ProjectionLine(msgspec.Struct, rename="camel"):
    metric: str
    stripe_price_id: str
    stripe_subscription_item_id: str
    stripe_meter_id: str
    currency: str
    quantity: str  # our counter's total for the period
    billed_quantity: int  # the whole units Stripe's meter holds once pushes settle
    amount_so_far: Money
    forecast: ForecastOut
    counter_watermark: str | None
    last_confirmed_push_at: str | None


class UnpricedMetric(msgspec.Struct, rename="camel"):
    """A metric with usage (or a meter) that no Stripe price bills for this customer."""

    metric: str
    quantity: str
    reason: str


class PeriodOut(msgspec.Struct, rename="camel"):
    key: str
    start: str
    end: str


class Freshness(msgspec.Struct, rename="camel"):
    counter_watermark: str | None  # the latest usage counted in these lines
    last_confirmed_push_at: str | None  # the latest push Stripe confirmed for them
    projection_lag_events: int  # committed events the counters have not applied yet
    as_of: str  # the service's clock when answered


class Projection(msgspec.Struct, rename="camel"):
    customer_ref: str
    period: PeriodOut
    currency: str | None  # None when no line is priced (or lines differ in currency)
    lines: list[ProjectionLine]
    subtotal: Money | None  # None rather than a made-up zero when nothing is priced
    total: Money | None
    forecast_total: Money | None
    unpriced: list[UnpricedMetric]
    reason: str | None  # why there is no total, when there is none
    freshness: Freshness
