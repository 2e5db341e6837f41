"""The cost projection of one customer's billing period: what Stripe would bill so far,
and a forecast to the period's end (``/v1/usage/projection``, docs/projection.md).

One function, ``project_cost``, that the route calls and a CLI or the admin UI
can call too. Prices come from Stripe through ``PriceBook``; quantities from
the counters view; amounts from ``domain.pricing``, rounded as Stripe rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from adapters.persistence import Stores
from adapters.price_book import PriceBook
from api.queries.usage import number, when
from api.schemas_projection import (
    ForecastOut,
    Freshness,
    Money,
    PeriodOut,
    Projection,
    ProjectionLine,
    UnpricedMetric,
)
from domain import fields
from domain.errors import NotFoundError
from domain.pricing import forecast_quantity, line_amount, major_units, whole_units
from domain.usage import usage_period_id

LIVE = "live"


def money(amount: int, currency: str) -> Money:
    return Money(amount=amount, decimal=major_units(amount, currency))


def project_cost(
    stores: Stores,
    price_book: Callable[[], PriceBook],
    tenant_id: UUID,
    customer_ref: str,
    period: str | None,
    now: datetime,
) -> Projection:
    """The customer's lines, priced from Stripe; 404 when the tenant has no such customer.

    ``price_book`` is called only after ``customer_ref`` and ``period`` are checked, so
    that bad input is refused naming its field even when Stripe cannot be reached.
    """
    fields.customer_ref(customer_ref)
    app, views = stores.app, stores.views
    billing = (
        app.named_period(tenant_id, customer_ref, period)
        if period is not None
        else app.period_for(tenant_id, customer_ref, now)
    )
    customer = app.cached_customer(tenant_id, customer_ref)
    if customer is None and not views.counters.counters(tenant_id, customer_ref=customer_ref):
        raise NotFoundError(f"customer {customer_ref!r} has no usage and no Stripe mapping")
    counters = {
        c.metric: c
        for c in views.counters.counters(tenant_id, customer_ref=customer_ref, period=billing.key)
    }
    # A period no invoice covers (the push side's NOT_BILLED) is priced by nothing: its
    # usage is listed as unpriced with the reason, never given today's price.
    not_billed = (
        customer.why_not_billed(billing.key, billing.start, billing.end)
        if customer is not None and customer.mapped
        else None
    )
    book = price_book()
    tenant = app.cached_tenant(tenant_id)
    lines: list[ProjectionLine] = []
    unpriced: list[UnpricedMetric] = []
    for metric in sorted(set(counters) | set(tenant.mappings)):
        counter = counters.get(metric)
        quantity = counter.value if counter is not None else Decimal(0)
        if not_billed is not None:
            unpriced.append(
                UnpricedMetric(metric, number(quantity) or "0", f"not billed: {not_billed}")
            )
            continue
        found = book.lookup(tenant_id, customer_ref, metric)
        if not found.lines:
            unpriced.append(UnpricedMetric(metric, number(quantity) or "0", found.reason or ""))
            continue
        aggregation = tenant.metric(metric).aggregation.value
        forecast = forecast_quantity(aggregation, quantity, billing.start, billing.end, now)
        confirmed = when(
            _last_confirmed(stores, usage_period_id(tenant_id, customer_ref, metric, billing.key))
        )
        # One line per subscription item on the meter: Stripe bills the usage on each.
        for item in found.lines:
            price = item.price
            lines.append(
                ProjectionLine(
                    metric=metric,
                    stripe_price_id=price.id,
                    stripe_subscription_item_id=item.item_id,
                    stripe_meter_id=found.stripe_meter_id or "",
                    currency=price.currency,
                    quantity=number(quantity) or "0",
                    billed_quantity=whole_units(quantity),
                    amount_so_far=money(line_amount(price, whole_units(quantity)), price.currency),
                    forecast=ForecastOut(
                        quantity=number(forecast.quantity) or "0",
                        amount=money(
                            line_amount(price, whole_units(forecast.quantity)), price.currency
                        ),
                        method=forecast.method,
                    ),
                    counter_watermark=when(counter.tally.watermark) if counter else None,
                    last_confirmed_push_at=confirmed,
                )
            )
    currencies = {line.currency for line in lines}
    currency = next(iter(currencies)) if len(currencies) == 1 else None
    reason = None
    if not_billed is not None:
        reason = f"no Stripe invoice covers this period: {not_billed}"
    elif not lines:
        reason = (
            "no Stripe price bills this customer's metrics: see unpriced"
            if unpriced
            else "the tenant has no metric mapped to a Stripe meter"
        )
    elif currency is None:
        # Never added across currencies (Stripe keeps one currency per customer, so this
        # is a misconfiguration to show, not a bill to sum).
        reason = (
            f"the lines are in different currencies ({', '.join(sorted(currencies))}):"
            " no total is given; see each line"
        )
    subtotal = total = forecast_total = None
    if currency is not None:
        subtotal = total = money(sum(line.amount_so_far.amount for line in lines), currency)
        forecast_total = money(sum(line.forecast.amount.amount for line in lines), currency)
    return Projection(
        customer_ref=customer_ref,
        period=PeriodOut(billing.key, when(billing.start) or "", when(billing.end) or ""),
        currency=currency,
        lines=lines,
        subtotal=subtotal,
        total=total,
        forecast_total=forecast_total,
        unpriced=unpriced,
        reason=reason,
        freshness=Freshness(
            counter_watermark=max(
                (ln.counter_watermark for ln in lines if ln.counter_watermark), default=None
            ),
            last_confirmed_push_at=max(
                (ln.last_confirmed_push_at for ln in lines if ln.last_confirmed_push_at),
                default=None,
            ),
            projection_lag_events=views.runner.lag().events,
            as_of=when(now) or "",
        ),
    )


def _last_confirmed(stores: Stores, period_id: UUID) -> datetime | None:
    settled = [
        p.settled_at
        for p in stores.views.ledger.pushes(period_id)
        if p.target == LIVE and p.status == "confirmed" and p.settled_at is not None
    ]
    return max(settled, default=None)
