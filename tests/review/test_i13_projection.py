"""Review of issue 13's cost projection: failing tests where it differs from Stripe's bill."""

from __future__ import annotations

from collections.abc import Callable

from adapters.persistence import Stores
from adapters.price_book import PriceBook
from adapters.stripe_gateway import SdkStripeGateway
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.stripe_port import SubscriptionLine
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator


class _WebhookDuringRead(SdkStripeGateway):
    """Reads Stripe, then, before the answer is cached, Stripe changes and its webhook lands."""

    def __init__(self, emulator: RunningEmulator) -> None:
        super().__init__(TEST_API_KEY, emulator.url)
        self.during_first_read: Callable[[], None] | None = None

    def subscription_lines(self, stripe_customer_id: str) -> list[SubscriptionLine]:
        lines = super().subscription_lines(stripe_customer_id)
        hook, self.during_first_read = self.during_first_read, None
        if hook is not None:
            hook()
        return lines


def test_a_webhook_that_lands_while_prices_are_read_is_not_undone(
    stores: Stores, emulator: RunningEmulator
) -> None:
    """``customer.subscription.deleted`` (or ``price.*``) arriving while another request
    is reading that customer's items from Stripe drops the cache entry, and then the
    in-flight read stores what it read *before* the change: the cancelled subscription's
    price is served for the whole ``STRIPEMETER_PRICE_CACHE_SECONDS`` (300 s), although
    docs/projection.md says a webhook makes the change show at once.

    From ``TtlCache.get_or_load`` (domain/caching.py:87-96), which puts the loaded value
    unconditionally, after any ``pop``/``pop_where`` that ran during the load
    (``PriceBook.forget_customer``/``forget_price``, adapters/price_book.py:92-97).
    """
    app, stripe = stores.app, emulator.client()
    tenant = app.register_tenant("acme", "Acme").id
    app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    meter = stripe.v1.billing.meters.create(
        {"display_name": "calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    app.map_meter(tenant, MeterMapping("api_calls", meter.id, "calls", "sum"))
    price = stripe.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 7,
            "product_data": {"name": "calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    customer = stripe.v1.customers.create({}).id
    sub = stripe.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
    app.map_customer(tenant, "cus_1", customer, None)

    gateway = _WebhookDuringRead(emulator)
    book = PriceBook(app, gateway, 300)

    def cancelled_and_notified() -> None:
        stripe.v1.subscriptions.cancel(sub.id)
        book.forget_customer(tenant, customer)  # what the subscription.deleted webhook does

    gateway.during_first_read = cancelled_and_notified
    assert book.lookup(tenant, "cus_1", "api_calls").line is not None  # read before the cancel
    after = book.lookup(tenant, "cus_1", "api_calls")
    assert after.line is None, "the cancelled subscription's price is still served"
