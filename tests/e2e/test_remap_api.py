"""Remapping a metric to another Stripe meter mid-period, over HTTP, against the emulator.

Stripe sums each meter on its own: a meter that takes over a period halfway
holds only what is pushed after the change. So a remap is refused while an
open period has pushed to the old meter, and reconciliation names the cause
when a remap happened anyway (before this rule, or through the bare mapping).
"""

from __future__ import annotations

from typing import Any

from domain.mappings import MeterMapping
from domain.pushing import PushOutcome
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_reconciliation_api import webhook
from tests.e2e.test_stripe_api import push_all, services, setup_stripe

MARCH_INVOICE: dict[str, Any] = {
    "id": "in_march",
    "object": "invoice",
    "billing_reason": "subscription_cycle",
    "created": 1775001600,  # 2026-04-01T00:00Z
    "period_start": 1772323200,  # 2026-03-01T00:00Z
    "period_end": 1775001600,
    "automatically_finalizes_at": 1775005200,
}


def remap(api: Api, event_name: str = "api_calls_v2") -> Any:
    return api.call(
        "POST",
        "/v1/mappings",
        json={"metric": "api_calls", "stripeEventName": event_name, "createMeter": True},
    )


def mapped_event_name(api: Api) -> str:
    [mapping] = api.call("GET", "/v1/mappings").json()["data"]
    return str(mapping["stripeEventName"])


def reconcile_march(api: Api) -> dict[str, Any]:
    run = api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03"})
    assert run.status_code == 200, run.text
    [report] = run.json()["data"]
    [line] = report["lines"]
    return dict(line)


def ten_pushed(api: Api, emulator: RunningEmulator) -> None:
    """The issue's start: api_calls mapped to the meter 'api_calls', 10 units pushed to it."""
    setup_stripe(api, emulator)
    api.ingest(event(quantity=10, ts="2026-03-10T09:00:00Z"))
    api.settle()
    assert push_all(api)[0] == PushOutcome.CONFIRMED


def test_remapping_after_a_push_in_the_open_period_is_409_and_keeps_the_old_meter(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    ten_pushed(api, emulator)

    refused = remap(api)
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "has usage pushed to the live meter 'api_calls' in open periods (2026-03)" in detail
    assert "Remap once those periods are closed" in detail
    assert "not offered yet" in detail
    assert mapped_event_name(api) == "api_calls"
    meters = emulator.client().v1.billing.meters.list().data
    assert [m.event_name for m in meters] == ["api_calls"]  # refused before creating one
    # Unmapping and mapping again is no way around it.
    assert api.call("DELETE", "/v1/mappings/api_calls").status_code == 200
    again = remap(api)
    assert again.status_code == 409, again.text
    restored = api.call("POST", "/v1/mappings", json={"metric": "api_calls"})
    assert restored.status_code == 201, restored.text  # the same meter: allowed

    # The old meter keeps the whole period: 10 + 5, and reconciliation agrees.
    api.ingest(event(quantity=5, ts="2026-03-10T11:00:00Z"))
    api.settle()
    assert push_all(api)[0] == PushOutcome.CONFIRMED
    line = reconcile_march(api)
    assert (line["status"], line["local"], line["stripe"]) == ("ok", 15, 15)


def test_remapping_before_any_push_is_allowed(stripe_api: Api, emulator: RunningEmulator) -> None:
    api = stripe_api
    setup_stripe(api, emulator)
    api.ingest(event(quantity=10, ts="2026-03-10T09:00:00Z"))
    api.settle()
    moved = remap(api)
    assert moved.status_code == 201, moved.text
    assert mapped_event_name(api) == "api_calls_v2"
    assert push_all(api)[0] == PushOutcome.CONFIRMED
    line = reconcile_march(api)
    assert (line["status"], line["local"], line["stripe"]) == ("ok", 10, 10)


def test_remapping_after_the_period_closed_is_allowed(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    live = setup_stripe(api, emulator)
    api.ingest(event(quantity=10, ts="2026-03-10T09:00:00Z"))
    api.settle()
    push_all(api)
    invoice = {**MARCH_INVOICE, "customer": live}
    for number, kind in enumerate(("invoice.created", "invoice.finalized")):
        answer = webhook(api, {"id": f"evt_{number}", "type": kind, "data": {"object": invoice}})
        assert answer.json()["periods"] == 1, answer.text
    api.settle()
    moved = remap(api)
    assert moved.status_code == 201, moved.text
    assert mapped_event_name(api) == "api_calls_v2"


def test_reconciliation_names_a_legacy_mid_period_remap(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    ten_pushed(api, emulator)
    # A remap recorded without the check, as before this rule: the bare mapping.
    meter = emulator.client().v1.billing.meters.create(
        {
            "display_name": "api calls v2",
            "event_name": "api_calls_v2",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    app = services(api).stores.app
    tenant = app.tenant_by_slug("acme").id
    app.map_meter(
        tenant,
        MeterMapping(
            metric="api_calls",
            stripe_meter_id=meter.id,
            stripe_event_name="api_calls_v2",
            stripe_formula="sum",
            customer_key="stripe_customer_id",
            value_key="value",
        ),
    )
    app.tenant(tenant)  # this process's pushes read the new mapping
    api.ingest(event(quantity=5, ts="2026-03-10T11:00:00Z"))
    api.settle()
    assert push_all(api)[0] == PushOutcome.CONFIRMED
    line = reconcile_march(api)
    assert (line["local"], line["stripe"], line["expected"]) == (15, 5, 15)
    assert (line["status"], line["cause"]) == ("drift", "meter remapped mid-period")
    # A repair brings the mapped meter to the local total (its drift names the cause).
    repaired = api.call(
        "POST", "/v1/reconciliation/run", json={"period": "2026-03", "repair": True}
    )
    [report] = repaired.json()["data"]
    [line] = report["lines"]
    assert line["status"] == "repaired", line
    api.settle()
    after = reconcile_march(api)
    assert (after["status"], after["local"], after["stripe"]) == ("ok", 15, 15)
    audit = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03")
    [drift] = audit.json()["repairs"]
    assert drift["reason"] == "meter remapped mid-period"
