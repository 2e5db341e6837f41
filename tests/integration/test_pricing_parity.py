"""domain/pricing.line_amount against the emulator's invoice preview, over random prices.

The price is created in the emulator through the SDK, read back through the
gateway (``subscription_lines``, then ``retrieve_price`` for a tiered price's
tiers: the path the projection's PriceBook takes) and priced by
the domain; the emulator prices the same usage with its own code. The two are
written apart (the emulator must not import the domain), so this can fail.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.stripe_gateway import SdkStripeGateway
from domain.pricing import line_amount
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator

unit_amounts = st.decimals(min_value=0, max_value=500, places=4)
flat_amounts = st.integers(0, 5_000)


@st.composite
def tiered(draw: st.DrawFn) -> dict[str, Any]:
    bounds = sorted(set(draw(st.lists(st.integers(1, 3_000), min_size=0, max_size=3))))
    tiers: list[dict[str, Any]] = [
        {
            "up_to": up_to,
            "unit_amount_decimal": str(draw(unit_amounts)),
            "flat_amount": draw(flat_amounts),
        }
        for up_to in [*bounds, "inf"]
    ]
    mode = draw(st.sampled_from(["graduated", "volume"]))
    return {"billing_scheme": "tiered", "tiers_mode": mode, "tiers": tiers}


@st.composite
def per_unit(draw: st.DrawFn) -> dict[str, Any]:
    price: dict[str, Any] = {"unit_amount_decimal": str(draw(unit_amounts))}
    if draw(st.booleans()):
        price["transform_quantity"] = {
            "divide_by": draw(st.integers(1, 1_000)),
            "round": draw(st.sampled_from(["up", "down"])),
        }
    return price


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    pricing=st.one_of(tiered(), per_unit()),
    data=st.data(),
    currency=st.sampled_from(["usd", "jpy", "kwd"]),
)
def test_domain_prices_like_the_emulators_preview(
    emulator_server: RunningEmulator, pricing: dict[str, Any], data: st.DataObject, currency: str
) -> None:
    # Often on a tier's bound or next to it, where graduated and volume tiers turn.
    edges = [
        b + d
        for t in pricing.get("tiers", [])
        if t["up_to"] != "inf"
        for b in [t["up_to"]]
        for d in (-1, 0, 1)
    ]
    near = st.sampled_from(edges) if edges else st.integers(0, 3)
    quantity = data.draw(st.one_of(st.integers(0, 6_000), near), label="quantity")
    stripe = emulator_server.client()
    event_name = f"calls_{uuid4().hex}"  # a meter per example: the server outlives them
    meter = stripe.v1.billing.meters.create(
        {
            "display_name": "calls",
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
        }
    )
    price = stripe.v1.prices.create(
        {
            "currency": currency,
            "product_data": {"name": "calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            **pricing,
        }
    )
    customer = stripe.v1.customers.create({}).id
    stripe.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
    if quantity:
        stripe.v1.billing.meter_events.create(
            {
                "event_name": event_name,
                "payload": {"stripe_customer_id": customer, "value": str(quantity)},
            }
        )
    [stripe_line] = stripe.v1.invoices.create_preview({"customer": customer}).lines.data
    assert stripe_line.quantity == quantity

    gateway = SdkStripeGateway(TEST_API_KEY, emulator_server.url, max_network_retries=0)
    [line] = gateway.subscription_lines(customer)
    assert line.price.tiers_unread == ("tiers" in pricing)  # Stripe lists no tiers
    price = gateway.retrieve_price(line.price.id) if line.price.tiers_unread else line.price
    assert price.unit_amount_decimal == (
        None if "tiers" in pricing else Decimal(pricing["unit_amount_decimal"])
    )
    assert line_amount(price, quantity) == stripe_line.amount
