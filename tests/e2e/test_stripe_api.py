"""Mappings, customers, pushes and the invoice audit over HTTP, against the emulator."""

from __future__ import annotations

from typing import Any

import pytest

from domain.pushing import PushOutcome, PushService, Target
from domain.usage import usage_period_id
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event


def services(api: Api) -> Any:
    return api.client.app.state.services


def push_all(api: Api, customer: str = "cus_1", metric: str = "api_calls") -> list[PushOutcome]:
    """What the push worker does for one period, for every target."""
    svc = services(api)
    app = svc.stores.app
    tenant = app.tenant_by_slug("acme").id
    period = app.period_for(tenant, customer, api.clock.now)
    pusher = PushService(app, svc.gateways, api.clock)
    period_id = usage_period_id(tenant, customer, metric, period.key)
    outcomes = [pusher.push(period_id, target) for target in (Target.LIVE, Target.SHADOW)]
    api.settle()
    return outcomes


def setup_stripe(api: Api, emulator: RunningEmulator, shadow: bool = False) -> str:
    live = emulator.client().v1.customers.create({"name": "Acme's customer"}).id
    body: dict[str, Any] = {"customerRef": "cus_1", "stripeCustomerId": live}
    mapping: dict[str, Any] = {"metric": "api_calls", "createMeter": True}
    if shadow:
        body["shadowStripeCustomerId"] = (
            emulator.client("sk_test_shadow").v1.customers.create({"name": "shadow"}).id
        )
        mapping["shadowEventName"] = "api_calls_shadow"
    created = api.call("POST", "/v1/mappings", json=mapping)
    assert created.status_code == 201, created.text
    mapped = api.call("POST", "/v1/customers", json=body)
    assert mapped.status_code == 201, mapped.text
    return str(live)


def test_mapping_validates_against_stripe(stripe_api: Api, emulator: RunningEmulator) -> None:
    api = stripe_api
    missing = api.call("POST", "/v1/mappings", json={"metric": "api_calls"})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "stripeEventName"
    count_meter = emulator.client().v1.billing.meters.create(
        {
            "display_name": "requests",
            "event_name": "requests",
            "default_aggregation": {"formula": "count"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    refused = api.call(
        "POST", "/v1/mappings", json={"metric": "api_calls", "stripeMeterId": count_meter.id}
    )
    assert refused.status_code == 422
    assert "counts events, not values" in refused.json()["errors"][0]["reason"]
    unknown = api.call("POST", "/v1/mappings", json={"metric": "nope", "createMeter": True})
    assert unknown.status_code == 404
    created = api.call("POST", "/v1/mappings", json={"metric": "api_calls", "createMeter": True})
    assert created.status_code == 201
    assert (created.json()["stripeFormula"], created.json()["push"]) == ("sum", "delta")
    again = api.call("POST", "/v1/mappings", json={"metric": "api_calls"})
    assert again.status_code == 200  # found by event name, unchanged
    listed = api.call("GET", "/v1/mappings").json()["data"]
    assert [m["metric"] for m in listed] == ["api_calls"]
    bad_customer = api.call(
        "POST", "/v1/customers", json={"customerRef": "cus_1", "stripeCustomerId": "cus_nope"}
    )
    assert bad_customer.status_code == 422
    assert bad_customer.json()["errors"][0]["field"] == "stripeCustomerId"


def test_the_audit_traces_every_pushed_unit_to_its_events(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    setup_stripe(api, emulator)
    api.ingest(
        *[
            event(idempotencyKey=f"e{i}", quantity="1.5", ts="2026-03-10T11:00:00Z")
            for i in range(3)
        ]
    )
    assert push_all(api)[0] is PushOutcome.CONFIRMED  # 4.5 -> 4 units
    api.ingest(event(idempotencyKey="e3", quantity="0.5", ts="2026-03-10T11:30:00Z"))
    assert push_all(api)[0] is PushOutcome.CONFIRMED  # 5.0 -> 1 more
    audit = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls").json()
    assert audit["counter"]["value"] == "5"
    assert audit["stripeUnitsConfirmed"] == {"live": 5}
    pushes = audit["pushes"]
    assert [(p["value"], p["status"], p["settledBy"]) for p in pushes] == [
        (4, "confirmed", "response"),
        (1, "confirmed", "response"),
    ]
    assert [[e["idempotencyKey"] for e in p["events"]] for p in pushes] == [
        ["e0", "e1", "e2"],
        ["e3"],
    ]
    assert {e["identifier"] for e in emulator.meter_events()} == {p["identifier"] for p in pushes}
    assert audit["unpushedEvents"] == []

    # Rebuilding the ledger (and every view) from the log gives the same answer.
    services(api).stores.views.runner.rebuild()
    assert api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls").json() == audit


def test_audit_pages_long_pushes_with_a_cursor(stripe_api: Api, emulator: RunningEmulator) -> None:
    api = stripe_api
    setup_stripe(api, emulator)
    api.ingest(*[event(idempotencyKey=f"e{i:03}", ts="2026-03-10T11:00:00Z") for i in range(130)])
    push_all(api)
    first = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls").json()
    [push] = first["pushes"]
    assert len(push["events"]) == 100 and push["eventsNextCursor"]
    rest = api.call(
        "GET",
        "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&push=live:1"
        f"&cursor={push['eventsNextCursor']}",
    ).json()
    keys = [e["idempotencyKey"] for e in push["events"] + rest["pushes"][0]["events"]]
    assert keys == [f"e{i:03}" for i in range(130)]
    assert rest["pushes"][0]["eventsNextCursor"] is None
    bad = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&push=first")
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "push"
    orphan = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&cursor=x")
    assert orphan.json()["errors"] == [
        {"field": "push", "reason": "is required with cursor: name the push to page"}
    ]


@pytest.mark.parametrize("with_test_key", [True, False])
def test_shadow_pushes_run_beside_live_ones_and_never_touch_them(
    stripe_api: Api, emulator: RunningEmulator, with_test_key: bool
) -> None:
    api = stripe_api
    live_customer = setup_stripe(api, emulator, shadow=True)
    if not with_test_key:
        services(api).gateways.pop(Target.SHADOW)  # as if STRIPE_TEST_SECRET_KEY were unset
    api.ingest(event(idempotencyKey="e1", quantity=7, ts="2026-03-10T11:00:00Z"))
    live, shadow = push_all(api)
    assert live is PushOutcome.CONFIRMED
    assert shadow is (PushOutcome.CONFIRMED if with_test_key else PushOutcome.UNMAPPED)
    events = emulator.meter_events()
    live_events = [e for e in events if e["event_name"] == "api_calls"]
    shadow_events = [e for e in events if e["event_name"] == "api_calls_shadow"]
    assert [(e["customer"], e["value"]) for e in live_events] == [(live_customer, 7)]
    assert len(shadow_events) == (1 if with_test_key else 0)
    assert all(e["customer"] != live_customer for e in shadow_events)
    audit = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls").json()
    assert audit["stripeUnitsConfirmed"] == (
        {"live": 7, "shadow": 7} if with_test_key else {"live": 7}
    )
    identifiers = {p["target"]: p["identifier"] for p in audit["pushes"]}
    if with_test_key:
        assert identifiers["live"] != identifiers["shadow"]


def test_customers_list_and_read(stripe_api: Api, emulator: RunningEmulator) -> None:
    api = stripe_api
    setup_stripe(api, emulator)
    api.settle()
    listed = api.call("GET", "/v1/customers").json()
    assert [c["customerRef"] for c in listed["data"]] == ["cus_1"]
    assert listed["data"][0]["billingCycle"] == "calendar-month"
    assert api.call("GET", "/v1/customers/cus_1").json()["customerRef"] == "cus_1"
    assert api.call("GET", "/v1/customers/cus_2").status_code == 404
    assert api.call("GET", "/v1/customers", key="globex-read").json()["data"] == []
