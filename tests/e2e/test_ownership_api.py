"""Each tenant owns its Stripe objects: over HTTP, against the emulator, on both backends.

The reproduction of issue 9: tenant B (globex) tries to map its metric onto
tenant A's (acme's) meter and its customer onto A's Stripe customer, then
sends 1,000 units. Before ownership claims, B's pushes landed on A's invoice
and A's reconciliation reported drift (local 5, Stripe 1,005).
"""

from __future__ import annotations

from typing import Any

import pytest

from domain.mappings import MeterMapping
from domain.pushing import PushOutcome, PushService, Target
from domain.usage import usage_period_id
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_reconciliation_api import webhook
from tests.e2e.test_stripe_api import services, setup_stripe

OWNED = "belongs to another tenant"


def mapped_and_pushed(api: Api, emulator: RunningEmulator) -> str:
    """acme mapped to a Stripe customer and meter, with 5 units pushed and confirmed."""
    live = setup_stripe(api, emulator)
    api.ingest(event(quantity=5, ts="2026-03-10T09:00:00Z"))
    api.settle()
    assert push(api, "acme")[0] is PushOutcome.CONFIRMED
    return live


def push(api: Api, slug: str, customer: str = "cus_1") -> list[PushOutcome]:
    """What the push worker does for one tenant's period, for every target."""
    svc = services(api)
    app = svc.stores.app
    tenant = app.tenant_by_slug(slug).id
    period = app.period_for(tenant, customer, api.clock.now)
    pusher = PushService(app, svc.gateways, api.clock)
    period_id = usage_period_id(tenant, customer, "api_calls", period.key)
    outcomes = [pusher.push(period_id, target) for target in (Target.LIVE, Target.SHADOW)]
    api.settle()
    return outcomes


def new_customer(emulator: RunningEmulator, name: str, key: str | None = None) -> str:
    client = emulator.client(key) if key else emulator.client()
    return str(client.v1.customers.create({"name": name}).id)


def refused_as_owned(answer: Any) -> None:
    assert answer.status_code == 409, answer.text
    detail = answer.json()["detail"]
    assert OWNED in detail
    assert "acme" not in detail.lower() and "globex" not in detail.lower()


def test_another_tenants_meter_and_customer_are_409_and_its_reconciliation_stays_ok(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    live = mapped_and_pushed(api, emulator)

    # B maps its metric onto A's meter, by event name and by meter id: refused.
    meter = services(api).stores.app.tenant_by_slug("acme").mappings["api_calls"]
    by_name = api.call(
        "POST",
        "/v1/mappings",
        key="globex-all",
        json={"metric": "api_calls", "stripeEventName": meter.stripe_event_name},
    )
    refused_as_owned(by_name)
    assert f"event name {meter.stripe_event_name!r}" in by_name.json()["detail"]
    by_id = api.call(
        "POST",
        "/v1/mappings",
        key="globex-all",
        json={"metric": "api_calls", "stripeMeterId": meter.stripe_meter_id},
    )
    refused_as_owned(by_id)
    # ... and its customerRef onto A's Stripe customer: refused.
    customer = api.call(
        "POST",
        "/v1/customers",
        key="globex-all",
        json={"customerRef": "cus_1", "stripeCustomerId": live},
    )
    refused_as_owned(customer)
    assert f"Stripe customer {live}" in customer.json()["detail"]

    # Nothing of B was mapped, so its 1,000 units stay with B.
    assert api.call("GET", "/v1/mappings", key="globex-read").json() == {"data": []}
    assert api.call("GET", "/v1/customers/cus_1", key="globex-read").status_code == 404
    accepted = api.ingest(event(quantity=1000, ts="2026-03-10T09:30:00Z"), key="globex-ingest")
    assert [r["status"] for r in accepted.json()["results"]] == ["accepted"]
    api.settle()
    assert push(api, "globex") == [PushOutcome.UNMAPPED, PushOutcome.UNMAPPED]

    run = api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03"})
    assert run.status_code == 200, run.text
    [report] = run.json()["data"]
    assert report["counts"] == {"ok": 1, "pending": 0, "drift": 0, "repaired": 0}
    [line] = report["lines"]
    assert (line["customerRef"], line["local"], line["stripe"], line["status"]) == (
        "cus_1",
        5,
        5,
        "ok",
    )


def test_the_owners_own_rebinding_stays_idempotent(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    live = setup_stripe(api, emulator, shadow=True)
    [mapping] = api.call("GET", "/v1/mappings", key="acme-read").json()["data"]
    again = api.call(
        "POST",
        "/v1/mappings",
        json={"metric": "api_calls", "shadowEventName": "api_calls_shadow"},
    )
    assert again.status_code == 200, again.text
    assert again.json() == mapping
    shadow = api.call("GET", "/v1/customers/cus_1", key="acme-read").json()
    rebound = api.call(
        "POST",
        "/v1/customers",
        json={
            "customerRef": "cus_1",
            "stripeCustomerId": live,
            "shadowStripeCustomerId": shadow["shadowStripeCustomerId"],
        },
    )
    assert rebound.status_code == 200, rebound.text
    assert rebound.json() == shadow
    # The shadow objects are claimed too, under the shadow (test) account.
    taken = api.call(
        "POST",
        "/v1/customers",
        key="globex-all",
        json={
            "customerRef": "cus_9",
            "stripeCustomerId": new_customer(emulator, "globex's own"),
            "shadowStripeCustomerId": shadow["shadowStripeCustomerId"],
        },
    )
    refused_as_owned(taken)
    assert taken.json()["detail"].startswith(f"Stripe customer {shadow['shadowStripeCustomerId']}")


def test_one_stripe_object_holds_one_mapping_of_a_tenant(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    """Two local counters pushing into one Stripe customer could never reconcile."""
    api = stripe_api
    live = setup_stripe(api, emulator)
    twice = api.call(
        "POST", "/v1/customers", json={"customerRef": "cus_2", "stripeCustomerId": live}
    )
    assert twice.status_code == 409
    assert twice.json()["detail"] == (
        f"Stripe customer {live} is already mapped to customer 'cus_1'; unmap that first"
    )


def test_remapping_releases_the_old_object_and_claims_the_new_one(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    first = setup_stripe(api, emulator)
    second = new_customer(emulator, "acme's second")
    moved = api.call(
        "POST", "/v1/customers", json={"customerRef": "cus_1", "stripeCustomerId": second}
    )
    assert moved.status_code == 201, moved.text
    assert moved.json()["stripeCustomerId"] == second
    # The first is free for anyone now; the second is acme's.
    freed = api.call(
        "POST",
        "/v1/customers",
        key="globex-all",
        json={"customerRef": "cus_9", "stripeCustomerId": first},
    )
    assert freed.status_code == 201, freed.text
    refused_as_owned(
        api.call(
            "POST",
            "/v1/customers",
            key="globex-all",
            json={"customerRef": "cus_8", "stripeCustomerId": second},
        )
    )
    # The same for meters: acme moves to a meter of another event name.
    other = api.call(
        "POST",
        "/v1/mappings",
        json={"metric": "api_calls", "stripeEventName": "acme_calls_v2", "createMeter": True},
    )
    assert other.status_code == 201, other.text
    took = api.call(
        "POST", "/v1/mappings", key="globex-all", json={"metric": "api_calls"}
    )  # the event name "api_calls", acme's before
    assert took.status_code == 201, took.text


def test_unmapping_stops_pushes_releases_the_claim_and_is_404_twice(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    live = mapped_and_pushed(api, emulator)

    for key in ("acme-read", "acme-ingest"):
        assert api.call("DELETE", "/v1/customers/cus_1", key=key).status_code == 403
        assert api.call("DELETE", "/v1/mappings/api_calls", key=key).status_code == 403
    # Another tenant cannot unmap what it never mapped: 404, and nothing changes.
    assert api.call("DELETE", "/v1/customers/cus_1", key="globex-all").status_code == 404
    assert api.call("DELETE", "/v1/mappings/api_calls", key="globex-all").status_code == 404

    gone = api.call("DELETE", "/v1/customers/cus_1")
    assert gone.status_code == 200, gone.text
    assert (gone.json()["customerRef"], gone.json()["stripeCustomerId"]) == ("cus_1", live)
    again = api.call("DELETE", "/v1/customers/cus_1")
    assert again.status_code == 404
    assert again.json()["detail"] == "customer 'cus_1' is not mapped to Stripe"
    assert api.call("GET", "/v1/customers/cus_1", key="acme-read").status_code == 404
    api.settle()
    assert api.call("GET", "/v1/customers", key="acme-read").json()["data"] == []

    # Usage is still counted, but no longer pushed: it stays unpushed, visible in the audit.
    api.ingest(event(quantity=2, ts="2026-03-10T10:00:00Z", idempotencyKey="after-unmap"))
    api.settle()
    assert push(api, "acme")[0] is PushOutcome.UNMAPPED
    audit = api.call(
        "GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03"
    ).json()
    assert audit["counter"]["value"] == "7"
    assert audit["stripeUnitsConfirmed"] == {"live": 5}
    assert [e["idempotencyKey"] for e in audit["unpushedEvents"]] == ["after-unmap"]
    # Not billed through Stripe: reconciliation has nothing to compare.
    run = api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03"})
    assert run.json()["data"] == []

    # The released customer may now be claimed by another tenant, and not back by acme.
    taken = api.call(
        "POST",
        "/v1/customers",
        key="globex-all",
        json={"customerRef": "g1", "stripeCustomerId": live},
    )
    assert taken.status_code == 201, taken.text
    refused_as_owned(
        api.call("POST", "/v1/customers", json={"customerRef": "cus_1", "stripeCustomerId": live})
    )

    # Mapped again to a Stripe customer of its own: refused while March, with 5 units at
    # the old Stripe customer, is open (the new one would bill only what follows).
    own = new_customer(emulator, "acme's new")
    back = api.call("POST", "/v1/customers", json={"customerRef": "cus_1", "stripeCustomerId": own})
    assert back.status_code == 409, back.text
    assert (
        f"pushed to the live Stripe customer {live} in open periods (api_calls 2026-03)"
        in (back.json()["detail"])
    )
    assert api.call("GET", "/v1/customers/cus_1", key="acme-read").status_code == 404

    # Unmapping the metric releases its meter the same way.
    meter = api.call("DELETE", "/v1/mappings/api_calls")
    assert meter.status_code == 200, meter.text
    assert meter.json()["stripeEventName"] == "api_calls"
    assert api.call("DELETE", "/v1/mappings/api_calls").status_code == 404
    assert api.call("GET", "/v1/mappings", key="acme-read").json() == {"data": []}
    took = api.call("POST", "/v1/mappings", key="globex-all", json={"metric": "api_calls"})
    assert took.status_code == 201, took.text


def test_unmap_path_parameters_are_checked(stripe_api: Api) -> None:
    api = stripe_api
    control = api.call("DELETE", "/v1/customers/a%01b")
    assert control.status_code == 422
    assert control.json()["errors"] == [
        {"field": "customerRef", "reason": "must not contain control, separator or bidi characters"}
    ]
    long = api.call("DELETE", "/v1/customers/" + "x" * 256)
    assert long.json()["errors"] == [
        {"field": "customerRef", "reason": "must be at most 255 characters"}
    ]
    unknown = api.call("DELETE", "/v1/mappings/nope")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "metric 'nope' is not declared"


def test_a_legacy_mapping_of_another_tenant_does_not_route_webhooks_to_it(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    """Claims, not the customers view, say whose invoice it is.

    Globex holds a mapping to acme's Stripe customer that was recorded before
    claims existed (no claim); acme's is claimed. Acme's invoice closes acme's
    period only.
    """
    api = webhook_api
    live = setup_stripe(api, emulator)
    app = services(api).stores.app
    acme, globex = app.tenant_by_slug("acme").id, app.tenant_by_slug("globex").id
    acme_meter = app.tenant(acme).mappings["api_calls"]
    app.map_meter(globex, MeterMapping("api_calls", acme_meter.stripe_meter_id, "api_calls", "sum"))
    app.map_customer(globex, "cus_1", live, None)
    api.ingest(event(quantity=5, ts="2026-03-10T09:00:00Z"))
    api.ingest(event(quantity=7, ts="2026-03-10T09:00:00Z"), key="globex-ingest")
    api.settle()
    invoice = {
        "id": "in_acme_1",
        "object": "invoice",
        "customer": live,
        "billing_reason": "subscription_cycle",
        "created": 1775001600,
        "period_start": 1772323200,
        "period_end": 1775001600,
        "automatically_finalizes_at": 1775005200,
    }
    created = webhook(api, {"id": "evt_1", "type": "invoice.created", "data": {"object": invoice}})
    assert created.json() == {"received": "invoice.created", "periods": 1}
    ours = app.repository.get(usage_period_id(acme, "cus_1", "api_calls", "2026-03"))
    theirs = app.repository.get(usage_period_id(globex, "cus_1", "api_calls", "2026-03"))
    assert ours.invoice_id == "in_acme_1"
    assert (theirs.invoice_id, theirs.closed) == (None, False)
    # Released by acme, the customer routes to nobody: not to globex's legacy mapping either.
    assert api.call("DELETE", "/v1/customers/cus_1").status_code == 200
    invoice["id"] = "in_acme_2"
    again = webhook(api, {"id": "evt_2", "type": "invoice.created", "data": {"object": invoice}})
    assert again.json() == {"received": "invoice.created", "periods": 0}
    theirs = app.repository.get(usage_period_id(globex, "cus_1", "api_calls", "2026-03"))
    assert theirs.invoice_id is None


def test_unclaimed_legacy_mappings_route_webhooks_only_without_conflict(
    webhook_api: Api, emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Before `stripemeter stripe ownership --apply`: one legacy mapping still closes its
    period; two tenants on one Stripe customer close neither (and an ERROR says so)."""
    api = webhook_api
    app = services(api).stores.app
    acme, globex = app.tenant_by_slug("acme").id, app.tenant_by_slug("globex").id
    alone, shared = new_customer(emulator, "acme's"), new_customer(emulator, "shared")
    meter = services(api).gateways[Target.LIVE].create_meter("api_calls", "api_calls", "sum")
    for tenant in (acme, globex):
        app.map_meter(tenant, MeterMapping("api_calls", meter.id, "api_calls", "sum"))
    app.map_customer(acme, "cus_1", alone, None)
    app.map_customer(acme, "cus_2", shared, None)
    app.map_customer(globex, "cus_2", shared, None)
    march = "2026-03-10T09:00:00Z"
    accepted = api.ingest(event(quantity=5, ts=march), event(customerRef="cus_2", ts=march))
    assert [r["status"] for r in accepted.json()["results"]] == ["accepted", "accepted"]
    theirs_in = api.ingest(event(customerRef="cus_2", quantity=7, ts=march), key="globex-ingest")
    assert [r["status"] for r in theirs_in.json()["results"]] == ["accepted"]
    api.settle()
    invoice = {
        "id": "in_legacy_1",
        "customer": alone,
        "billing_reason": "subscription_cycle",
        "created": 1775001600,
        "period_start": 1772323200,
        "period_end": 1775001600,
    }
    one = webhook(api, {"id": "evt_1", "type": "invoice.created", "data": {"object": invoice}})
    assert one.json() == {"received": "invoice.created", "periods": 1}
    invoice.update(id="in_legacy_2", customer=shared)
    two = webhook(api, {"id": "evt_2", "type": "invoice.created", "data": {"object": invoice}})
    assert two.json() == {"received": "invoice.created", "periods": 0}
    assert any(
        r.levelname == "ERROR"
        and f"Stripe customer {shared} matches 2 unclaimed mappings" in r.getMessage()
        and "stripemeter stripe ownership" in r.getMessage()
        for r in caplog.records
    )
    ours = app.repository.get(usage_period_id(acme, "cus_2", "api_calls", "2026-03"))
    theirs = app.repository.get(usage_period_id(globex, "cus_2", "api_calls", "2026-03"))
    assert (ours.invoice_id, theirs.invoice_id) == (None, None)
    alone_period = app.repository.get(usage_period_id(acme, "cus_1", "api_calls", "2026-03"))
    assert alone_period.invoice_id == "in_legacy_1"


def test_a_refused_remap_leaves_the_tenants_own_mapping_in_force(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    """The 409 comes before anything changes, also in the copies pushes read (cached)."""
    api = stripe_api
    live = setup_stripe(api, emulator)
    own = new_customer(emulator, "globex's own")
    app = services(api).stores.app
    globex = app.tenant_by_slug("globex").id
    mapped = api.call(
        "POST",
        "/v1/customers",
        key="globex-all",
        json={"customerRef": "g1", "stripeCustomerId": own},
    )
    assert mapped.status_code == 201, mapped.text
    meter = api.call(
        "POST",
        "/v1/mappings",
        key="globex-all",
        json={"metric": "api_calls", "stripeEventName": "globex_calls", "createMeter": True},
    )
    assert meter.status_code == 201, meter.text
    assert app.cached_customer(globex, "g1").stripe_customer_id == own  # type: ignore[union-attr]

    refused_as_owned(
        api.call(
            "POST",
            "/v1/customers",
            key="globex-all",
            json={"customerRef": "g1", "stripeCustomerId": live},
        )
    )
    refused_as_owned(
        api.call(
            "POST",
            "/v1/mappings",
            key="globex-all",
            json={"metric": "api_calls", "stripeEventName": "api_calls"},
        )
    )
    assert app.cached_customer(globex, "g1").stripe_customer_id == own  # type: ignore[union-attr]
    assert app.cached_tenant(globex).mappings["api_calls"].stripe_event_name == "globex_calls"
    assert app.customer(globex, "g1").stripe_customer_id == own  # type: ignore[union-attr]
    assert app.tenant(globex).mappings["api_calls"].stripe_event_name == "globex_calls"
