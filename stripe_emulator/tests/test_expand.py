"""``expand`` as Stripe treats it, through the SDK: at most four levels, and a price's
``tiers`` only when expanded."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from stripe_emulator.tests.helpers import make_meter

TIERED = {
    "billing_scheme": "tiered",
    "tiers_mode": "volume",
    "tiers": [{"up_to": 10, "unit_amount": 5}, {"up_to": "inf", "unit_amount": 2}],
}


def tiered_subscription(client: Any) -> tuple[Any, Any]:
    meter = make_meter(client)
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "product_data": {"name": "calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            **TIERED,
        }
    )
    customer = client.v1.customers.create({})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    return price, sub


def test_an_expansion_deeper_than_four_levels_is_refused(client: Any) -> None:
    _, sub = tiered_subscription(client)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.list(
            {"customer": sub.customer, "expand": ["data.items.data.price.tiers"]}
        )
    assert "cannot expand more than 4 levels" in str(refused.value)
    assert refused.value.param == "expand[0]"
    four = client.v1.subscriptions.list({"customer": sub.customer, "expand": ["data.items"]})
    assert [s.id for s in four.data] == [sub.id]


def test_tiers_come_only_when_expanded(client: Any) -> None:
    price, sub = tiered_subscription(client)
    assert "tiers" not in price  # the create answer too
    assert "tiers" not in client.v1.prices.retrieve(price.id)
    expanded = client.v1.prices.retrieve(price.id, {"expand": ["tiers"]})
    assert [(t.up_to, t.unit_amount) for t in expanded.tiers] == [(10, 5), (None, 2)]

    listed = client.v1.prices.list({"expand": ["data.tiers"]}).data
    assert [len(p.tiers) for p in listed] == [2]
    assert all("tiers" not in p for p in client.v1.prices.list().data)

    [item] = client.v1.subscriptions.retrieve(sub.id)["items"].data
    assert "tiers" not in item.price and item.price.tiers_mode == "volume"
    deep = client.v1.subscriptions.retrieve(sub.id, {"expand": ["items.data.price.tiers"]})
    assert len(deep["items"].data[0].price.tiers) == 2
