"""Quantity transformation, currencies and catalog events, through the official SDK."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from stripe_emulator.tests.helpers import make_meter, send


def ts(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


def price_for(client: Any, meter_id: str, currency: str = "usd", **pricing: Any) -> Any:
    return client.v1.prices.create(
        {
            "currency": currency,
            "product_data": {"name": "Rental minutes"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
            **pricing,
        }
    )


def preview_amount(client: Any, price: Any, usage: int) -> tuple[int, int, str]:
    """The preview line (quantity, amount) and invoice currency for ``usage`` on one price."""
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2030, 1, 1)})
    customer = client.v1.customers.create({"test_clock": clock.id})
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    send(client, customer.id, usage, timestamp=ts(2030, 1, 1))
    preview = client.v1.invoices.create_preview({"customer": customer.id})
    [line] = preview.lines.data
    return line.quantity, line.amount, preview.currency


def test_transform_quantity_is_kept_and_applied(client: Any) -> None:
    meter = make_meter(client)
    # Stripe's example: 10 USD an hour, usage reported in minutes.
    up = price_for(
        client, meter.id, unit_amount=1000, transform_quantity={"divide_by": 60, "round": "up"}
    )
    assert (up.transform_quantity.divide_by, up.transform_quantity.round) == (60, "up")
    again = client.v1.prices.retrieve(up.id)
    assert again.transform_quantity.divide_by == 60
    assert preview_amount(client, up, 150) == (150, 3000, "usd")  # 2.5 h billed as 3
    down = price_for(
        client, meter.id, unit_amount=1000, transform_quantity={"divide_by": 60, "round": "down"}
    )
    assert preview_amount(client, down, 150)[1] == 2000
    plain = price_for(client, meter.id, unit_amount=1000)
    assert plain.transform_quantity is None


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"transform_quantity": {"round": "up"}}, "transform_quantity[divide_by]"),
        ({"transform_quantity": {"divide_by": 0, "round": "up"}}, "transform_quantity[divide_by]"),
        ({"transform_quantity": {"divide_by": 5}}, "transform_quantity[round]"),
        ({"transform_quantity": {"divide_by": 5, "round": "near"}}, "transform_quantity[round]"),
        (
            {
                "billing_scheme": "tiered",
                "tiers_mode": "volume",
                "tiers": [{"up_to": "inf", "unit_amount": 1}],
                "transform_quantity": {"divide_by": 5, "round": "up"},
            },
            "transform_quantity",
        ),
    ],
)
def test_invalid_transform_is_refused(client: Any, params: dict[str, Any], param: str) -> None:
    meter = make_meter(client)
    pricing = {"unit_amount": 100, **params}
    if "tiers" in params:
        del pricing["unit_amount"]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        price_for(client, meter.id, **pricing)
    assert raised.value.param == param


def test_zero_and_three_decimal_currencies_bill_in_minor_units(client: Any) -> None:
    meter = make_meter(client)
    yen = price_for(client, meter.id, "jpy", unit_amount_decimal="0.5")
    assert preview_amount(client, yen, 7) == (7, 4, "jpy")  # 3.5 yen, rounded half up
    dinar = price_for(client, meter.id, "kwd", unit_amount_decimal="12.5")
    assert preview_amount(client, dinar, 3) == (3, 38, "kwd")  # 37.5 fils -> 0.038 KWD


def test_catalog_and_subscription_events(client: Any) -> None:
    meter = make_meter(client)
    price = price_for(client, meter.id, unit_amount=5)
    client.v1.prices.update(price.id, {"nickname": "per call"})
    client.v1.prices.update(price.id, {"nickname": "per call"})  # no change: no event
    customer = client.v1.customers.create({})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    client.v1.subscriptions.cancel(sub.id)

    def objects(kind: str) -> list[Any]:
        return [e.data.object for e in client.v1.events.list({"type": kind}).data]

    [created] = objects("price.created")
    assert (created.id, created.unit_amount) == (price.id, 5)
    [updated] = client.v1.events.list({"type": "price.updated"}).data
    assert updated.data.object.nickname == "per call"
    assert updated.data.previous_attributes.nickname is None
    [started] = objects("customer.subscription.created")
    assert (started.id, started.status) == (sub.id, "active")
    [ended] = objects("customer.subscription.deleted")
    assert (ended.id, ended.status) == (sub.id, "canceled")
