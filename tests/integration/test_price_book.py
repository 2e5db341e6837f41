"""PriceBook on a real store and the emulator: found by meter, cached, re-read on its timer."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from adapters.persistence import Stores
from adapters.price_book import PriceBook
from adapters.stripe_gateway import SdkStripeGateway
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.pricing import Price, line_amount
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


@contextmanager
def stripe_enforcing_expand_depth() -> Iterator[tuple[str, list[list[str]]]]:
    """A local HTTP server answering ``GET /v1/subscriptions`` as Stripe does about
    ``expand``: a path deeper than four levels (on a list, ``data.`` is one of them) is a
    400 ``invalid_request_error``; otherwise an empty list. Records each request's paths."""
    asked: list[list[str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            paths = [v for k, values in query.items() if k.startswith("expand") for v in values]
            asked.append(paths)
            too_deep = [p for p in paths if len(p.split(".")) > 4]
            if too_deep:
                status, body = (
                    400,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": "You cannot expand more than 4 levels of a property."
                            f" Property: {too_deep[0]}",
                        }
                    },
                )
            else:
                status, body = (
                    200,
                    {
                        "object": "list",
                        "url": "/v1/subscriptions",
                        "has_more": False,
                        "data": [],
                    },
                )
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_subscription_read_expands_no_deeper_than_stripe_allows() -> None:
    """Stripe refuses an expansion deeper than four levels (on a list call ``data`` is
    one), so the subscription read expands nothing that deep: tiered prices' tiers are
    read with ``retrieve_price`` instead."""
    with stripe_enforcing_expand_depth() as (url, asked):
        gateway = SdkStripeGateway(TEST_API_KEY, url)
        lines = gateway.subscription_lines("cus_anyone")
    assert len(asked) == 1, "the gateway asked nothing of Stripe"
    assert lines == []


class CountingGateway(SdkStripeGateway):
    def __init__(self, emulator: RunningEmulator) -> None:
        super().__init__(TEST_API_KEY, emulator.url)
        self.retrieved: list[str] = []

    def retrieve_price(self, price_id: str) -> Price:
        self.retrieved.append(price_id)
        return super().retrieve_price(price_id)


def test_tiers_are_read_once_per_price_until_a_price_webhook(
    stores: Stores, emulator: RunningEmulator
) -> None:
    """Stripe lists a subscription's prices without tiers; the book reads a tiered price
    once (``prices.retrieve`` with ``expand=["tiers"]``) for every customer on it, and
    again after ``price.*`` drops it or its TTL passes."""
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
            "product_data": {"name": "calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 10, "unit_amount": 5}, {"up_to": "inf", "unit_amount": 2}],
        }
    )
    for ref in ("cus_1", "cus_2"):
        customer = stripe.v1.customers.create({}).id
        stripe.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
        app.map_customer(tenant, ref, customer, None)
    gateway, ticks = CountingGateway(emulator), Ticks()
    book = PriceBook(app, gateway, 60, ticks)

    for ref in ("cus_1", "cus_2"):
        found = book.lookup(tenant, ref, "api_calls").line
        assert found is not None and line_amount(found.price, 12) == 10 * 5 + 2 * 2
    assert gateway.retrieved == [price.id]  # one read for both customers

    book.forget_price(price.id)  # what a price.* webhook does
    assert book.lookup(tenant, "cus_1", "api_calls").line is not None
    assert gateway.retrieved == [price.id, price.id]
    ticks.now = 60.0  # the timer
    assert book.lookup(tenant, "cus_2", "api_calls").line is not None
    assert gateway.retrieved == [price.id] * 3


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
