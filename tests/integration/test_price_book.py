"""PriceBook on a real store and the emulator: found by meter, cached, re-read on its timer."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from adapters.persistence import Stores
from adapters.price_book import PriceBook
from adapters.stripe_gateway import SdkStripeGateway
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.stripe_port import SubscriptionLine
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_prices_are_found_on_the_meter_and_read_again_after_the_ttl(
    stores: Stores, emulator: RunningEmulator, clock: FakeClock
) -> None:
    app, stripe = stores.app, emulator.client()
    tenant = app.register_tenant("acme", "Acme").id
    for metric in ("api_calls", "storage"):
        app.declare_metric(tenant, MetricDefinition(metric, Aggregation.SUM))
    calls = stripe.v1.billing.meters.create(
        {"display_name": "calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    other = stripe.v1.billing.meters.create(
        {"display_name": "other", "event_name": "other", "default_aggregation": {"formula": "sum"}}
    )
    app.map_meter(tenant, MeterMapping("api_calls", calls.id, "calls", "sum"))
    recurring = {"interval": "month", "usage_type": "metered"}
    prices = {
        meter.id: stripe.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount_decimal": amount,
                "product_data": {"name": meter.event_name},
                "recurring": {**recurring, "meter": meter.id},
            }
        )
        for meter, amount in ((other, "9"), (calls, "0.25"))
    }
    customer = stripe.v1.customers.create({}).id
    sub = stripe.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": p.id} for p in prices.values()]}
    )
    app.map_customer(tenant, "cus_1", customer, None)

    ticks = Ticks()
    book = PriceBook(app, SdkStripeGateway(TEST_API_KEY, emulator.url), 60, ticks)
    found = book.lookup(tenant, "cus_1", "api_calls")
    assert found.line is not None and found.line.price.id == prices[calls.id].id
    assert found.line.price.unit_amount_decimal == Decimal("0.25")
    assert book.lookup(tenant, "cus_1", "storage").reason == (
        "metric 'storage' is not mapped to a Stripe meter"
    )
    assert book.lookup(tenant, "cus_2", "api_calls").reason == (
        "the customer is not mapped to a Stripe customer"
    )
    cost = book.line_cost(
        tenant, "cus_1", "api_calls", Decimal("10.9"), clock.now, clock.now, clock.now
    )
    assert cost is not None and (cost.amount_so_far, cost.method) == (3, "run_rate")  # 2.5 -> 3

    stripe.v1.subscriptions.cancel(sub.id)
    ticks.now = 59.0  # still within the TTL: the cached price stands
    assert book.lookup(tenant, "cus_1", "api_calls").line is not None
    ticks.now = 60.0  # the timer: read from Stripe again
    gone = book.lookup(tenant, "cus_1", "api_calls")
    assert gone.line is None and "no active subscription" in (gone.reason or "")
    assert (
        book.line_cost(tenant, "cus_1", "api_calls", Decimal(1), clock.now, clock.now, clock.now)
        is None
    )


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
    """A ``customer.subscription.*`` (or ``price.*``) webhook that lands while another
    request reads that customer's items from Stripe is not undone: the read, begun before
    the change, answers its own request but is not cached, so the change shows at once."""
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
