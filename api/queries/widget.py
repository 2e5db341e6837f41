"""What the widget shows: ``/v1/usage/current`` and ``/v1/usage/projection`` for the
token's customer, folded into one answer (nothing computed twice)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from adapters.persistence import Stores
from adapters.price_book import PriceBook
from api.queries.projection import money, project_cost
from api.queries.usage import current_usage, when
from api.schemas_projection import Money, Projection
from api.widget_schemas import WidgetMetric, WidgetUsage
from domain.errors import NotFoundError
from domain.stripe_port import StripeError
from domain.widget import WidgetGrant


def widget_usage(
    stores: Stores, price_book: Callable[[], PriceBook], grant: WidgetGrant, now: datetime
) -> WidgetUsage:
    """The grant's customer's usage per metric, with its cost when Stripe prices it."""
    usage = current_usage(stores, grant.tenant_id, grant.customer_ref, None, None)
    projection: Projection | None = None
    cost_reason: str | None = None
    try:
        projection = project_cost(
            stores, price_book, grant.tenant_id, grant.customer_ref, usage.period, now
        )
    except NotFoundError:
        cost_reason = "no usage yet"
    except StripeError as error:
        cost_reason = f"prices could not be read from Stripe: {error}"
    tenant = stores.app.cached_tenant(grant.tenant_id)
    values = {c.metric: c.value for c in usage.counters}
    names = set(values)
    if projection is not None:
        names |= {line.metric for line in projection.lines}
        names |= {u.metric for u in projection.unpriced}
        cost_reason = projection.reason
    metrics = []
    for name in sorted(names):
        definition = tenant.metrics.get(name)
        currency, so_far, forecast, no_price = _metric_cost(projection, name, cost_reason)
        metrics.append(
            WidgetMetric(
                metric=name,
                unit=definition.unit if definition is not None else "",
                value=values.get(name, "0"),
                currency=currency,
                cost_so_far=so_far,
                forecast=forecast,
                no_price=no_price,
            )
        )
    return WidgetUsage(
        customer_ref=grant.customer_ref,
        period=usage.period,
        period_start=usage.period_start,
        period_end=usage.period_end,
        metrics=metrics,
        currency=projection.currency if projection is not None else None,
        cost_so_far=projection.total if projection is not None else None,
        forecast=projection.forecast_total if projection is not None else None,
        cost_reason=cost_reason,
        as_of=when(now) or "",
    )


def _metric_cost(
    projection: Projection | None, metric: str, cost_reason: str | None
) -> tuple[str | None, Money | None, Money | None, str | None]:
    """A metric's cost so far and forecast: the sum of its projection lines (one per
    subscription item), or no cost and why."""
    if projection is None:
        return None, None, None, cost_reason or "no price"
    lines = [line for line in projection.lines if line.metric == metric]
    if not lines:
        reasons = [u.reason for u in projection.unpriced if u.metric == metric]
        return None, None, None, (reasons[0] if reasons else "no price")
    currencies = {line.currency for line in lines}
    if len(currencies) != 1:
        return None, None, None, "priced in more than one currency: no total"
    currency = lines[0].currency
    so_far = sum(line.amount_so_far.amount for line in lines)
    forecast = sum(line.forecast.amount.amount for line in lines)
    return currency, money(so_far, currency), money(forecast, currency), None
