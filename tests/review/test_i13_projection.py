"""Review of issue 13's cost projection: failing tests where it differs from Stripe's bill."""

from __future__ import annotations

from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api
from tests.e2e.test_anchor_webhook_api import move_to, work
from tests.e2e.test_projection_api import NOW, priced_customer, projection, use


def test_two_subscriptions_billing_the_same_meter_are_both_projected(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    """A customer on two active subscriptions, each with a price on the metric's meter
    (a base plan and an add-on, or a migration overlap), is billed the meter's usage by
    both: Stripe's two upcoming invoices hold one line each. The projection keeps only
    the first item it meets (``PriceBook.lookup`` returns on the first line whose
    ``price.meter`` matches, adapters/price_book.py:85-87), so its amount so far and
    total understate what Stripe bills, with nothing saying a second item was dropped;
    the issue asks for "the price of each subscription item whose meter StripeMeter
    pushes to".
    """
    api = webhook_api
    customer, _, first_sub = priced_customer(api, emulator, "usd", {"unit_amount": 7})
    stripe = emulator.client()
    first_price = stripe.v1.subscriptions.retrieve(first_sub)["items"].data[0].price
    addon = stripe.v1.prices.create(
        {
            "currency": "usd",
            "product_data": {"name": "API calls add-on"},
            "recurring": {
                "interval": "month",
                "usage_type": "metered",
                "meter": first_price.recurring.meter,
            },
            "unit_amount": 3,
        }
    )
    second_sub = stripe.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": addon.id}]}
    ).id
    move_to(api, emulator, NOW)
    use(api, 10)
    work(api)

    billed = sum(
        stripe.v1.invoices.create_preview({"customer": customer, "subscription": sub}).total
        for sub in (first_sub, second_sub)
    )
    assert billed == 10 * 7 + 10 * 3  # Stripe bills the meter's 10 units on both items

    body = projection(api).json()
    assert body["total"]["amount"] == billed, body
