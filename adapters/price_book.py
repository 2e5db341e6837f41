"""The prices Stripe bills a tenant's customers with, read from Stripe and cached.

For a customer × metric, the price is that of the item of the customer's
active Stripe subscription whose price's ``recurring.meter`` is the meter the
metric is mapped to (``POST /v1/mappings``): the meter StripeMeter pushes the
metric's usage to. Nothing is configured twice.

The subscription items of one Stripe customer are read in one call and kept
for ``STRIPEMETER_PRICE_CACHE_SECONDS`` (the timer: an entry older than that
is read again on its next use). A tiered price's tiers are read on their own
(``retrieve_price``: Stripe lists them only when expanded, and a subscription
list cannot expand that deep) and kept per price id for as long. Stripe's
webhooks drop entries sooner: ``customer.subscription.*`` the entry of that
customer (of the tenant that owns it), ``price.*`` that price and every entry
holding it. A tenant's lookups start
from its own customer mapping and its own meter mapping, and the cache is keyed
by tenant: a tenant only ever prices its own customers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import msgspec

from adapters.closing import StripeId
from domain.application import MeteringApp
from domain.caching import TtlCache
from domain.pricing import Price, forecast_quantity, line_amount, whole_units
from domain.pushing import Target
from domain.spend import LineCost
from domain.stripe_port import StripeGateway, SubscriptionLine

Lines = tuple[SubscriptionLine, ...]


def price_book_for(
    app: MeteringApp, gateways: Mapping[Target, StripeGateway], ttl_seconds: int
) -> PriceBook | None:
    """A price book on the live Stripe account when this process has one, else None."""
    live = gateways.get(Target.LIVE)
    return None if live is None else PriceBook(app, live, ttl_seconds)


class PriceRef(msgspec.Struct, frozen=True):
    """What a ``price.*`` webhook's object must carry for the cache: the price's id."""

    id: StripeId


@dataclass(frozen=True)
class PriceLookup:
    """Every subscription line that bills a customer × metric, or why there is none.

    Stripe bills a meter's usage on *each* item whose price is on that meter (a base
    plan and an add-on, or two subscriptions overlapping in a migration), so all of
    them are returned, in the order Stripe lists them.
    """

    lines: Lines = ()
    reason: str | None = None
    stripe_meter_id: str | None = None

    @property
    def line(self) -> SubscriptionLine | None:
        """The first of ``lines``, or None when no line bills the metric."""
        return self.lines[0] if self.lines else None


class PriceBook:
    """Finds and caches prices; implements ``domain.spend.SpendSource``."""

    def __init__(
        self,
        app: MeteringApp,
        gateway: StripeGateway,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        maxsize: int = 100_000,
    ) -> None:
        self.app = app
        self.gateway = gateway
        self._lines: TtlCache[tuple[UUID, str], Lines] = TtlCache(ttl_seconds, maxsize, clock)
        self._prices: TtlCache[str, Price] = TtlCache(ttl_seconds, maxsize, clock)

    def lines(self, tenant_id: UUID, stripe_customer_id: str) -> Lines:
        """The Stripe customer's subscription lines, cached; only called with the tenant's own."""
        return self._lines.get_or_load(
            (tenant_id, stripe_customer_id),
            lambda key: tuple(
                self._with_tiers(ln) for ln in self.gateway.subscription_lines(key[1])
            ),
        )

    def _with_tiers(self, line: SubscriptionLine) -> SubscriptionLine:
        """The line with its price's tiers, read once per price (Stripe lists them only
        when expanded, and not that deep in a subscription list)."""
        if not line.price.tiers_unread:
            return line
        price = self._prices.get_or_load(line.price.id, self.gateway.retrieve_price)
        return replace(line, price=price)

    def lookup(self, tenant_id: UUID, customer_ref: str, metric: str) -> PriceLookup:
        """The line billing this customer's metric, found from the tenant's own mappings."""
        mapping = self.app.cached_tenant(tenant_id).mappings.get(metric)
        if mapping is None:
            return PriceLookup((), f"metric {metric!r} is not mapped to a Stripe meter")
        customer = self.app.cached_customer(tenant_id, customer_ref)
        if customer is None or not customer.mapped:
            return PriceLookup((), "the customer is not mapped to a Stripe customer")
        meter = mapping.stripe_meter_id
        found = tuple(
            line
            for line in self.lines(tenant_id, customer.stripe_customer_id)
            if line.price.meter == meter
        )
        if found:
            return PriceLookup(found, stripe_meter_id=meter)
        return PriceLookup(
            (),
            f"no active subscription of Stripe customer {customer.stripe_customer_id} has a"
            f" price on meter {meter}",
            meter,
        )

    def forget_customer(self, tenant_id: UUID, stripe_customer_id: str) -> int:
        return self._lines.pop_where(lambda key, _: key == (tenant_id, stripe_customer_id))

    def forget_price(self, price_id: str) -> int:
        """Drop the price and every cached customer whose lines hold it (prices are the
        account's)."""
        self._prices.pop(price_id)
        return self._lines.pop_where(lambda _, lines: any(ln.price.id == price_id for ln in lines))

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
        """The cost of every item billing the metric, summed (Stripe bills each of them).

        None when no item bills it, and when the items differ in currency: no single
        amount exists then (Stripe itself keeps one currency per customer).
        """
        found = self.lookup(tenant_id, customer_ref, metric).lines
        currencies = {line.price.currency for line in found}
        if len(currencies) != 1:
            return None
        aggregation = self.app.cached_tenant(tenant_id).metric(metric).aggregation.value
        forecast = forecast_quantity(aggregation, quantity, period_start, period_end, now)
        return LineCost(
            currency=currencies.pop(),
            price_ids=tuple(line.price.id for line in found),
            amount_so_far=sum(line_amount(ln.price, whole_units(quantity)) for ln in found),
            forecast_quantity=forecast.quantity,
            forecast_amount=sum(
                line_amount(ln.price, whole_units(forecast.quantity)) for ln in found
            ),
            method=forecast.method,
        )
