"""The README's order over HTTP: usage first, then the Stripe mapping."""

from __future__ import annotations

from typing import Any

from domain.pushing import PushOutcome, PushService, Target
from domain.usage import usage_period_id
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_stripe_api import push_all, services


def map_meter(api: Api) -> None:
    created = api.call("POST", "/v1/mappings", json={"metric": "api_calls", "createMeter": True})
    assert created.status_code == 201, created.text


def test_usage_sent_before_the_customer_is_mapped_is_pushed_after(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    """The quick start sends usage for cus_1; "Pushing to Stripe" maps it afterwards."""
    api = stripe_api
    sent = api.ingest(event(quantity=5, ts="2026-03-09T08:00:00Z", idempotencyKey="early"))
    assert sent.json()["accepted"] == 1
    map_meter(api)
    stripe = emulator.client()
    live = stripe.v1.customers.create({"name": "no subscription yet"}).id
    mapped = api.call(
        "POST", "/v1/customers", json={"customerRef": "cus_1", "stripeCustomerId": live}
    )
    assert mapped.status_code == 201, mapped.text
    assert mapped.json()["billingCycle"] == "calendar-month"

    assert push_all(api)[0] is PushOutcome.CONFIRMED
    meter = stripe.v1.billing.meters.list().data[0]
    summaries = stripe.v1.billing.meters.event_summaries.list(
        meter.id,
        {"customer": live, "start_time": 1772323200, "end_time": 1775001600},  # March 2026
    )
    assert sum(s.aggregated_value for s in summaries.data) == 5
    current = api.call("GET", "/v1/usage/current?customerRef=cus_1").json()
    assert (current["period"], current["counters"][0]["value"]) == ("2026-03", "5")
    assert current["notBilled"] == []
    run = api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03"}).json()
    assert [line["status"] for line in run["data"][0]["lines"]] == ["ok"]


def test_usage_moves_into_the_subscriptions_periods_and_what_came_before_is_reported(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    """A subscription starting now, anchored on the 15th: usage counted since it started
    moves into its first period, event by event; usage from before it stays in March's
    calendar period, counted, never pushed, and both answers say so."""
    api = stripe_api  # the clock and the emulator stand at 2026-03-10T12:00:00Z
    api.ingest(
        event(quantity=3, ts="2026-03-02T09:00:00Z", idempotencyKey="before-subscription"),
        event(quantity=2, ts="2026-03-10T12:01:00Z", idempotencyKey="after-start"),
    )
    map_meter(api)
    stripe = emulator.client()
    meter = stripe.v1.billing.meters.list().data[0]
    price = stripe.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 1,
            "product_data": {"name": "calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    live = stripe.v1.customers.create({"name": "metered from today"}).id
    stripe.v1.subscriptions.create(
        {
            "customer": live,
            "items": [{"price": price.id}],
            "billing_cycle_anchor": 1773576000,  # 2026-03-15T12:00:00Z
        }
    )
    mapped = api.call(
        "POST", "/v1/customers", json={"customerRef": "cus_1", "stripeCustomerId": live}
    )
    assert mapped.status_code == 201, mapped.text
    assert mapped.json()["billingCycleAnchor"] == "2026-03-15T12:00:00Z"
    api.settle()

    current = api.call("GET", "/v1/usage/current?customerRef=cus_1").json()
    assert (current["period"], current["periodEnd"]) == (
        "2026-03-10T12:00:00Z",
        "2026-03-15T12:00:00Z",
    )
    assert [c["value"] for c in current["counters"]] == ["2"]
    assert current["notBilled"] == [
        {
            "metric": "api_calls",
            "period": "2026-03",
            "periodStart": "2026-03-01T00:00:00Z",
            "periodEnd": "2026-03-10T12:00:00Z",
            "value": "3",
            "reason": "before the customer's Stripe subscription started"
            " (2026-03-10T12:00:00Z): counted, never pushed",
        }
    ]
    new = audit(api, "2026-03-10T12:00:00Z")
    assert [(e["idempotencyKey"], e["note"]) for e in new["unpushedEvents"]] == [
        ("after-start", "moved from period 2026-03")
    ]
    assert new["notBilledReason"] is None
    old = audit(api, "2026-03")
    assert old["notBilledReason"].startswith("before the customer's Stripe subscription started")
    assert old["movedTo"] == ["2026-03-10T12:00:00Z"]
    assert old["counter"]["value"] == "3"
    assert sorted((e["idempotencyKey"], e["status"]) for e in old["unpushedEvents"]) == [
        ("after-start", "moved"),
        ("before-subscription", "counted"),
    ]

    assert push_all(api)[0] is PushOutcome.CONFIRMED
    svc = services(api)
    tenant = svc.stores.app.tenant_by_slug("acme").id
    calendar = usage_period_id(tenant, "cus_1", "api_calls", "2026-03")
    pusher = PushService(svc.stores.app, svc.gateways, api.clock)
    assert pusher.push(calendar, Target.LIVE) is PushOutcome.NOT_BILLED


def audit(api: Api, period: str) -> Any:
    answer = api.call(
        "GET", f"/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period={period}"
    )
    assert answer.status_code == 200, answer.text
    return answer.json()
