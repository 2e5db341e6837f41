"""The cost projection over HTTP, priced from the emulator's Stripe, equal to its invoice.

For each price model the amount so far must equal, to the minor unit, the
line of the emulator's ``invoices.create_preview`` for the same customer once
the pushes settled: the emulator prices with its own code (stripe_emulator/
pricing.py), the service with domain/pricing.py and the price it read back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_anchor_webhook_api import move_to, stripe_events, work
from tests.e2e.test_reconciliation_api import webhook

MAPPED = datetime(2026, 3, 10, 12, tzinfo=UTC)  # where webhook_api puts the clock
NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)
TIERS = [
    {"up_to": 100, "unit_amount": 10, "flat_amount": 50},
    {"up_to": 1000, "unit_amount_decimal": "2.5", "flat_amount": 200},
    {"up_to": "inf", "unit_amount_decimal": "0.1"},
]
MODELS: dict[str, tuple[str, dict[str, Any], int]] = {
    # name: (currency, price parameters, whole units pushed)
    "per_unit_decimal": ("usd", {"unit_amount_decimal": "0.125"}, 1004),  # 125.5 -> 126
    "graduated_flat": (
        "usd",
        {"billing_scheme": "tiered", "tiers_mode": "graduated", "tiers": TIERS},
        1235,
    ),
    "volume_flat": (
        "usd",
        {"billing_scheme": "tiered", "tiers_mode": "volume", "tiers": TIERS},
        500,
    ),
    "transform_up": (
        "usd",
        {"unit_amount": 1000, "transform_quantity": {"divide_by": 60, "round": "up"}},
        150,
    ),
    "transform_down": (
        "usd",
        {"unit_amount": 1000, "transform_quantity": {"divide_by": 60, "round": "down"}},
        150,
    ),
    "jpy": ("jpy", {"unit_amount_decimal": "0.7"}, 1235),  # 864.5 -> 865 yen
    "kwd": ("kwd", {"unit_amount_decimal": "1.25"}, 1001),  # 1251.25 -> 1.251 KWD
}


def priced_customer(
    api: Api, emulator: RunningEmulator, currency: str, pricing: dict[str, Any]
) -> tuple[str, str, str]:
    """cus_1 mapped to a Stripe customer subscribed (at MAPPED) to one metered price."""
    stripe = emulator.client()
    mapping = api.call("POST", "/v1/mappings", json={"metric": "api_calls", "createMeter": True})
    assert mapping.status_code == 201, mapping.text
    price = stripe.v1.prices.create(
        {
            "currency": currency,
            "product_data": {"name": "API calls"},
            "recurring": {
                "interval": "month",
                "usage_type": "metered",
                "meter": mapping.json()["stripeMeterId"],
            },
            **pricing,
        }
    )
    customer = stripe.v1.customers.create({"name": "Acme's customer"}).id
    sub = stripe.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
    mapped = api.call(
        "POST", "/v1/customers", json={"customerRef": "cus_1", "stripeCustomerId": customer}
    )
    assert mapped.status_code == 201, mapped.text
    return customer, price.id, sub.id


def use(api: Api, units: int) -> None:
    """``units`` and a half: Stripe is pushed the whole units only."""
    api.ingest(
        event(quantity=units - 1, ts="2026-03-12T09:00:00Z", idempotencyKey="a"),
        event(quantity="1.5", ts="2026-03-14T09:00:00Z", idempotencyKey="b"),
    )


def projection(api: Api, key: str = "acme-read", **query: str) -> Any:
    params = {"customerRef": "cus_1", **query}
    return api.call("GET", "/v1/usage/projection", key, params=params)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_amount_so_far_equals_stripes_preview(
    webhook_api: Api, emulator: RunningEmulator, model: str
) -> None:
    api = webhook_api
    currency, pricing, units = MODELS[model]
    customer, price_id, _ = priced_customer(api, emulator, currency, pricing)
    move_to(api, emulator, NOW)
    use(api, units)
    work(api)  # the pushes settle: Stripe's meter holds `units`

    preview = emulator.client().v1.invoices.create_preview({"customer": customer})
    [stripe_line] = preview.lines.data
    assert stripe_line.quantity == units

    answer = projection(api)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [line] = body["lines"]
    assert line["amountSoFar"]["amount"] == stripe_line.amount
    assert body["total"]["amount"] == body["subtotal"]["amount"] == preview.total
    assert (line["stripePriceId"], line["currency"], body["currency"]) == (
        price_id,
        currency,
        currency,
    )
    assert (line["quantity"], line["billedQuantity"]) == (f"{units}.5", units)
    exponent = {"usd": 2, "jpy": 0, "kwd": 3}[currency]
    assert line["amountSoFar"]["decimal"] == format(
        Decimal(stripe_line.amount).scaleb(-exponent), f".{exponent}f"
    )
    # A month of 31 days, 5 of them elapsed: the run rate.
    elapsed, length = NOW - MAPPED, timedelta(days=31)
    expected = (Decimal(units) + Decimal("0.5")) * Decimal(length / elapsed)
    assert line["forecast"]["method"] == "run_rate"
    assert Decimal(line["forecast"]["quantity"]) == expected.quantize(Decimal("0.000001"))
    assert body["period"] == {
        "key": "2026-03-10T12:00:00Z",
        "start": "2026-03-10T12:00:00Z",
        "end": "2026-04-10T12:00:00Z",
    }
    freshness = body["freshness"]
    assert freshness["counterWatermark"] is not None
    assert freshness["lastConfirmedPushAt"] is not None
    assert freshness["projectionLagEvents"] == 0

    # POST with the body answers the same.
    posted = api.call("POST", "/v1/usage/projection", "acme-read", json={"customerRef": "cus_1"})
    assert posted.status_code == 200, posted.text
    assert posted.json() == body


def test_money_reads_in_major_units(webhook_api: Api, emulator: RunningEmulator) -> None:
    api = webhook_api
    priced_customer(api, emulator, "kwd", {"unit_amount": 1230})
    move_to(api, emulator, NOW)
    api.ingest(event(quantity=1, ts="2026-03-12T09:00:00Z", idempotencyKey="a"))
    api.settle()
    line = projection(api).json()["lines"][0]
    assert line["amountSoFar"] == {"amount": 1230, "decimal": "1.230"}


def test_no_price_is_said_never_a_made_up_zero(webhook_api: Api, emulator: RunningEmulator) -> None:
    api = webhook_api
    move_to(api, emulator, NOW)
    api.ingest(event(customerRef="cus_2", ts="2026-03-12T09:00:00Z", idempotencyKey="a"))
    api.settle()
    body = projection(api, customerRef="cus_2").json()
    assert body["lines"] == [] and body["total"] is None and body["currency"] is None
    assert body["reason"] == "no Stripe price bills this customer's metrics: see unpriced"
    [unpriced] = body["unpriced"]
    assert unpriced["reason"] == "metric 'api_calls' is not mapped to a Stripe meter"

    unknown = projection(api, customerRef="cus_nobody")
    assert unknown.status_code == 404


def test_bad_input_names_the_field(webhook_api: Api, emulator: RunningEmulator) -> None:
    api = webhook_api
    api.ingest(event(ts="2026-03-10T09:00:00Z", idempotencyKey="a"))
    api.settle()
    missing = api.call("GET", "/v1/usage/projection", "acme-read")
    assert missing.status_code in (400, 422)
    assert missing.json()["errors"][0]["field"] == "customerRef"
    bad_period = projection(api, period="last week")
    assert bad_period.status_code == 422
    assert bad_period.json()["errors"][0]["field"] == "period"
    extra = api.call(
        "POST", "/v1/usage/projection", "acme-read", json={"customerRef": "cus_1", "x": 1}
    )
    assert extra.status_code in (400, 422)
    assert extra.json()["errors"][0]["field"] == "x"
    wrong_type = api.call("POST", "/v1/usage/projection", "acme-read", json={"customerRef": 5})
    assert wrong_type.status_code in (400, 422)
    assert wrong_type.json()["errors"][0]["field"] == "customerRef"
    ingest_only = api.call(
        "GET", "/v1/usage/projection", "acme-ingest", params={"customerRef": "cus_1"}
    )
    assert ingest_only.status_code == 403


def test_a_tenant_prices_only_its_own_customers(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    priced_customer(api, emulator, "usd", {"unit_amount": 7})
    move_to(api, emulator, NOW)
    use(api, 10)
    api.settle()
    assert projection(api).json()["lines"][0]["amountSoFar"]["amount"] == 70

    # Globex has no cus_1: Acme's customer does not exist for it.
    assert projection(api, key="globex-read").status_code == 404
    # Globex's own cus_1 (same reference) is its own: no mapping, no price of Acme's.
    api.ingest(event(ts="2026-03-12T09:00:00Z", idempotencyKey="g"), key="globex-all")
    api.settle()
    theirs = projection(api, key="globex-read").json()
    assert theirs["lines"] == [] and theirs["total"] is None
    assert "not mapped to a Stripe meter" in theirs["unpriced"][0]["reason"]


def test_webhooks_refresh_the_cached_prices(webhook_api: Api, emulator: RunningEmulator) -> None:
    api = webhook_api
    stripe = emulator.client()
    _, price_id, sub = priced_customer(api, emulator, "usd", {"unit_amount": 7})
    move_to(api, emulator, NOW)
    use(api, 10)
    api.settle()
    assert projection(api).json()["lines"][0]["stripePriceId"] == price_id

    stripe.v1.subscriptions.cancel(sub)
    # Cached (STRIPEMETER_PRICE_CACHE_SECONDS): the price stands until Stripe says otherwise.
    assert projection(api).json()["lines"][0]["stripePriceId"] == price_id
    [deleted] = stripe_events(emulator, "customer.subscription.deleted")
    assert webhook(api, deleted).status_code == 200
    body = projection(api).json()
    assert body["lines"] == [] and body["total"] is None
    assert "no active subscription" in body["unpriced"][0]["reason"]

    # A price change drops every cached customer on that price.
    stripe.v1.prices.update(price_id, {"nickname": "renamed"})
    [updated] = stripe_events(emulator, "price.updated")
    answer = webhook(api, updated)
    assert answer.status_code == 200, answer.text
    assert answer.json()["periods"] == 0  # nobody is cached on it any more
    malformed = webhook(api, {"type": "price.updated", "data": {"object": {"nickname": "x"}}})
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["field"] == "data.object.id"


def test_a_price_webhook_drops_the_customers_on_it(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    _, price_id, _ = priced_customer(api, emulator, "usd", {"unit_amount": 7})
    move_to(api, emulator, NOW)
    use(api, 10)
    api.settle()
    assert projection(api).status_code == 200  # now cached
    emulator.client().v1.prices.update(price_id, {"metadata": {"tier": "gold"}})
    [updated] = stripe_events(emulator, "price.updated")
    assert webhook(api, updated).json()["periods"] == 1


def test_spend_alerts_are_priced_with_the_projection_s_stripe_price(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    """A spend alert is judged on the amount the projection shows: the price read from
    Stripe by the process's price book, wired as the alerts' spend source."""
    api = webhook_api
    priced_customer(api, emulator, "usd", {"unit_amount": 10})  # 10 cents a unit
    move_to(api, emulator, NOW)
    rule = {"metric": "api_calls", "kind": "spend", "basis": "amount_so_far", "currency": "usd"}
    over = api.call("POST", "/v1/alerts", json={**rule, "threshold": 1_000})  # $10.00
    under = api.call("POST", "/v1/alerts", json={**rule, "threshold": 1_300})
    assert over.status_code == under.status_code == 201, over.text
    api.ingest(event(quantity=120, ts="2026-03-12T09:00:00Z"))  # $12.00
    api.settle()
    assert projection(api).json()["total"]["amount"] == 1_200

    def incidents(alert: Any) -> list[tuple[str, str]]:
        path = f"/v1/alerts/{alert.json()['id']}/incidents"
        found = api.call("GET", path, "acme-read").json()["data"]
        return [(i["status"], i["observed"]) for i in found]

    assert incidents(over) == [("triggered", "1200")]
    assert incidents(under) == []


def test_bad_input_is_a_4xx_naming_the_field_even_without_stripe(api: Api) -> None:
    """Without Stripe configured, bad input is still a 422 naming the field: the fields
    are checked before the price book (which needs Stripe) is asked for, so a client is
    never told to retry a request that can never succeed."""
    empty = api.call("GET", "/v1/usage/projection", "acme-read", params={"customerRef": ""})
    assert empty.status_code == 422, empty.text
    assert empty.json()["errors"][0]["field"] == "customerRef"
    posted = api.call(
        "POST",
        "/v1/usage/projection",
        "acme-read",
        json={"customerRef": "cus_1", "period": "last week"},
    )
    assert posted.status_code == 422, posted.text


def test_a_period_no_invoice_covers_is_not_priced_as_billed(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    """Usage counted before the customer's Stripe subscription started lies in a period
    no invoice covers (``notBilled`` in /v1/usage/current, Stripe's preview holds none of
    it): the projection lists it as unpriced with that reason, never with an amount."""
    api = webhook_api
    early = event(quantity=40, ts="2026-03-05T09:00:00Z", idempotencyKey="early")
    assert api.ingest(early).json()["accepted"] == 1
    customer, _, _ = priced_customer(api, emulator, "usd", {"unit_amount": 7})
    move_to(api, emulator, NOW)
    api.ingest(event(quantity=10, ts="2026-03-12T09:00:00Z", idempotencyKey="later"))
    work(api)

    current = api.call("GET", "/v1/usage/current", "acme-read", params={"customerRef": "cus_1"})
    [not_billed] = current.json()["notBilled"]
    assert (not_billed["period"], not_billed["value"]) == ("2026-03", "40")
    preview = emulator.client().v1.invoices.create_preview({"customer": customer})
    assert [line.quantity for line in preview.lines.data] == [10]  # the 40 are billed nowhere

    body = projection(api, period="2026-03").json()
    billed = [line["amountSoFar"]["amount"] for line in body["lines"]]
    assert not any(billed) and not (body["total"] or {}).get("amount"), body
    assert body["reason"].startswith("no Stripe invoice covers this period"), body
    assert [u["reason"] for u in body["unpriced"]] == ["not billed: " + not_billed["reason"]], body


def test_two_subscriptions_billing_the_same_meter_are_both_projected(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    """A customer on two subscriptions with a price on the metric's meter (a base plan
    and an add-on, or a migration overlap) is billed the usage on both: one projection
    line per subscription item, both in the total, which equals Stripe's two invoices."""
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
    items = {line["stripeSubscriptionItemId"] for line in body["lines"]}
    assert len(items) == 2 and {line["metric"] for line in body["lines"]} == {"api_calls"}


def test_items_in_two_currencies_get_no_total(webhook_api: Api, emulator: RunningEmulator) -> None:
    """Items on the meter in different currencies are each priced, never added: no total,
    and the reason names the currencies."""
    api = webhook_api
    customer, _, first_sub = priced_customer(api, emulator, "usd", {"unit_amount": 7})
    stripe = emulator.client()
    meter = stripe.v1.subscriptions.retrieve(first_sub)["items"].data[0].price.recurring.meter
    recurring = {"interval": "month", "usage_type": "metered", "meter": meter}
    addon = stripe.v1.prices.create(
        {
            "currency": "eur",
            "product_data": {"name": "EU"},
            "recurring": recurring,
            "unit_amount": 3,
        }
    )
    stripe.v1.subscriptions.create({"customer": customer, "items": [{"price": addon.id}]})
    move_to(api, emulator, NOW)
    use(api, 10)
    work(api)

    body = projection(api).json()
    amounts = sorted((ln["currency"], ln["amountSoFar"]["amount"]) for ln in body["lines"])
    assert amounts == [("eur", 30), ("usd", 70)], body
    assert body["currency"] is None and body["total"] is None and body["subtotal"] is None
    assert "different currencies (eur, usd)" in body["reason"], body
