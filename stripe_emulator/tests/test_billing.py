"""Catalog, subscriptions, test clocks and invoices, including one full billing cycle."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import stripe

from stripe_emulator.testing import RunningEmulator
from stripe_emulator.tests.helpers import make_meter, send

HOUR = 3600


def ts(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


def metered_price(client: Any, meter_id: str, **pricing: Any) -> Any:
    pricing = pricing or {"unit_amount": 25}
    return client.v1.prices.create(
        {
            "currency": "usd",
            "product_data": {"name": "API calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
            **pricing,
        }
    )


GRADUATED = {
    "billing_scheme": "tiered",
    "tiers_mode": "graduated",
    "tiers": [{"up_to": 100, "unit_amount": 10}, {"up_to": "inf", "unit_amount": 5}],
}


def test_products_and_prices(client: Any) -> None:
    product = client.v1.products.create({"name": "Platform"})
    meter = make_meter(client)
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount_decimal": "0.5",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    assert (price.type, price.unit_amount, price.unit_amount_decimal) == (
        "recurring",
        None,
        Decimal("0.5"),
    )
    assert price.recurring.meter == meter.id
    tiered = metered_price(client, meter.id, **GRADUATED)
    assert tiered.tiers_mode == "graduated"
    assert "tiers" not in tiered  # includable: Stripe sends it only when expanded
    expanded = client.v1.prices.retrieve(tiered.id, {"expand": ["tiers"]})
    assert [t.up_to for t in expanded.tiers] == [100, None]
    assert {p.id for p in client.v1.prices.list({"product": product.id}).data} == {price.id}
    assert client.v1.products.retrieve(product.id).name == "Platform"


def test_metered_price_needs_a_meter(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create(
            {"currency": "usd", "unit_amount": 1, "product_data": {"name": "x"},
             "recurring": {"interval": "month", "usage_type": "metered"}}
        )  # fmt: skip
    assert raised.value.param == "recurring[meter]"


def test_test_clock_lifecycle(client: Any) -> None:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2030, 1, 1), "name": "c"})
    assert (clock.object, clock.status) == ("test_helpers.test_clock", "ready")
    customer = client.v1.customers.create({"test_clock": clock.id})
    assert customer.test_clock == clock.id
    advanced = client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2030, 1, 2)})
    assert advanced.frozen_time == ts(2030, 1, 2)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2030, 1, 1)})
    assert [c.id for c in client.v1.test_helpers.test_clocks.list().data] == [clock.id]
    assert client.v1.test_helpers.test_clocks.delete(clock.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve(customer.id)  # deleted with its clock


def test_events_on_a_clock_are_judged_in_clock_time(client: Any) -> None:
    make_meter(client)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2030, 1, 1)})
    customer = client.v1.customers.create({"test_clock": clock.id}).id
    send(client, customer, 1, timestamp=ts(2029, 12, 31))  # past for the clock, far future for us
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(client, customer, 1, timestamp=ts(2030, 1, 2))
    assert raised.value.code == "timestamp_in_future"


def test_subscription_periods_and_anchor(client: Any) -> None:
    meter = make_meter(client)
    price = metered_price(client, meter.id)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2030, 1, 10)})
    customer = client.v1.customers.create({"test_clock": clock.id})
    sub = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "billing_cycle_anchor": ts(2030, 2, 1),
        }
    )
    [item] = sub["items"].data
    # A future anchor gives a short first period up to it, then whole months from it.
    assert (item.current_period_start, item.current_period_end) == (ts(2030, 1, 10), ts(2030, 2, 1))
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2030, 2, 1, 1)})
    item = client.v1.subscription_items.retrieve(item.id)
    assert (item.current_period_start, item.current_period_end) == (ts(2030, 2, 1), ts(2030, 3, 1))
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.create(
            {
                "customer": customer.id,
                "items": [{"price": price.id}],
                "billing_cycle_anchor": ts(2030, 1, 1),
            }
        )


def test_end_of_cycle_scenario(client: Any, emu: RunningEmulator) -> None:
    # A customer on a test clock subscribes on Jan 31 to a graduated metered price:
    # 10 cents per call up to 100 calls, then 5 cents.
    start = ts(2030, 1, 31, 12)
    period_end = ts(2030, 2, 28, 12)  # Jan 31 + 1 month clamps to Feb 28
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start})
    customer = client.v1.customers.create({"test_clock": clock.id, "email": "cycle@example.com"})
    meter = make_meter(client)
    price = metered_price(client, meter.id, **GRADUATED)
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    assert sub["items"].data[0].current_period_end == period_end

    # Usage in the period: 60 + 50, a retried duplicate (refused), 30 then cancelled,
    # and a -10 correction: 100 calls.
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": start + 10 * 86_400})
    send(client, customer.id, 60, identifier="e1", timestamp=start + HOUR)
    send(client, customer.id, 50, identifier="e2", timestamp=start + 2 * HOUR)
    with pytest.raises(stripe.InvalidRequestError):
        send(client, customer.id, 50, identifier="e2", timestamp=start + 2 * HOUR)
    send(client, customer.id, 30, identifier="e3", timestamp=start + 3 * HOUR)
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "e3"}}
    )
    send(client, customer.id, -10, identifier="e4", timestamp=start + 4 * HOUR)

    preview = client.v1.invoices.create_preview({"customer": customer.id, "subscription": sub.id})
    [line] = preview.lines.data
    assert (line.quantity, line.amount) == (100, 1000)
    assert (line.period.start, line.period.end) == (start, period_end)

    # The period ends: a draft invoice appears; usage reported during the grace
    # period (timestamped inside the period) still counts.
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": period_end + 60})
    [draft] = client.v1.invoices.list({"subscription": sub.id, "status": "draft"}).data
    assert draft.lines.data[0].quantity == 100
    send(client, customer.id, 20, identifier="e5", timestamp=period_end - 60)
    send(client, customer.id, 7, identifier="next", timestamp=period_end + 30)  # next period

    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": period_end + 2 * HOUR})
    invoice = client.v1.invoices.retrieve(draft.id)
    assert invoice.status == "open"
    assert invoice.billing_reason == "subscription_cycle"
    assert invoice.status_transitions.finalized_at == period_end + 2 * HOUR
    assert (invoice.period_start, invoice.period_end) == (start, period_end)
    [line] = invoice.lines.data
    # 120 calls: 100 at 10 cents + 20 at 5 cents.
    assert (line.quantity, line.amount, invoice.total, invoice.amount_due) == (
        120,
        1100,
        1100,
        1100,
    )
    assert line.parent.subscription_item_details.subscription == sub.id
    item = client.v1.subscription_items.retrieve(sub["items"].data[0].id)
    assert (item.current_period_start, item.current_period_end) == (period_end, ts(2030, 3, 31, 12))


def test_negative_cycle_total_bills_zero(client: Any) -> None:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2030, 5, 1)})
    customer = client.v1.customers.create({"test_clock": clock.id})
    meter = make_meter(client)
    price = metered_price(client, meter.id)
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    send(client, customer.id, 5, timestamp=ts(2030, 5, 1))
    send(client, customer.id, -8, timestamp=ts(2030, 5, 1))
    preview = client.v1.invoices.create_preview({"customer": customer.id})
    assert (preview.lines.data[0].quantity, preview.total) == (0, 0)
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2030, 6, 1, 2)})
    invoices = client.v1.invoices.list({"subscription": sub.id}).data
    cycle = next(i for i in invoices if i.billing_reason == "subscription_cycle")
    assert (cycle.status, cycle.total, cycle.lines.data[0].quantity) == ("paid", 0, 0)


def test_licensed_and_metered_items_with_module_style(
    module_stripe: Any, emu: RunningEmulator
) -> None:
    emu.configure(invoice_grace_seconds=0)
    clock = stripe.test_helpers.TestClock.create(frozen_time=ts(2030, 1, 1))
    customer = stripe.Customer.create(test_clock=clock.id)
    meter = stripe.billing.Meter.create(
        display_name="m", event_name="api_calls", default_aggregation={"formula": "count"}
    )
    product = stripe.Product.create(name="Plan")
    seat = stripe.Price.create(
        currency="usd", product=product.id, unit_amount=1000, recurring={"interval": "month"}
    )
    calls = stripe.Price.create(
        currency="usd", product=product.id, unit_amount=3,
        recurring={"interval": "month", "usage_type": "metered", "meter": meter.id},
    )  # fmt: skip
    sub = stripe.Subscription.create(
        customer=customer.id, items=[{"price": seat.id, "quantity": 2}, {"price": calls.id}]
    )
    first = stripe.Invoice.list(customer=customer.id).data[0]
    assert (first.billing_reason, first.total, first.status) == (
        "subscription_create",
        2000,
        "open",
    )
    for _ in range(4):
        stripe.billing.MeterEvent.create(
            event_name="api_calls", payload={"stripe_customer_id": customer.id},
            timestamp=ts(2030, 1, 1),
        )  # fmt: skip
    stripe.test_helpers.TestClock.advance(clock.id, frozen_time=ts(2030, 2, 1))
    cycle = stripe.Invoice.list(subscription=sub.id, status="open").data[0]
    amounts = sorted((line.quantity, line.amount) for line in cycle.lines.data)
    assert amounts == [(2, 2000), (4, 12)]
    assert stripe.Invoice.retrieve(cycle.id).total == 2012
    assert stripe.Subscription.retrieve(sub.id).latest_invoice == cycle.id


def test_wall_clock_subscription_rolls_over_when_the_wall_clock_moves(
    client: Any, emu: RunningEmulator
) -> None:
    emu.set_now(ts(2030, 3, 1), frozen=True)
    meter = make_meter(client)
    price = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 1, "product_data": {"name": "d"},
         "recurring": {"interval": "day", "usage_type": "metered", "meter": meter.id}}
    )  # fmt: skip
    customer = client.v1.customers.create({})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    send(client, customer.id, 9)
    emu.set_now(ts(2030, 3, 2, 2), frozen=True)
    invoices = client.v1.invoices.list({"subscription": sub.id, "status": "open"}).data
    assert [i.total for i in invoices] == [9]


def test_preview_without_subscription(client: Any) -> None:
    customer = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.create_preview({"customer": customer.id})
    assert raised.value.code == "invoice_upcoming_none"


def test_cancel_subscription(client: Any) -> None:
    meter = make_meter(client)
    price = metered_price(client, meter.id)
    customer = client.v1.customers.create({})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled"
    assert client.v1.subscriptions.list({"customer": customer.id}).data == []
    assert len(client.v1.subscriptions.list({"customer": customer.id, "status": "all"}).data) == 1
