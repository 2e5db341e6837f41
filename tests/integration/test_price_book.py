"""PriceBook on a real store and the emulator: found by meter, cached, re-read on its timer."""

from __future__ import annotations

from decimal import Decimal

from adapters.persistence import Stores
from adapters.price_book import PriceBook
from adapters.stripe_gateway import SdkStripeGateway
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
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
