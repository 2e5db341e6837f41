"""Reconciliation, adjustments and Stripe's invoice webhooks over HTTP, against the emulator."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from domain.usage import usage_period_id
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import WEBHOOK_SECRET, Api, event, stripe_signature
from tests.e2e.test_stripe_api import push_all, services, setup_stripe


def signed(payload: Any, secret: str = WEBHOOK_SECRET) -> tuple[bytes, str]:
    body = json.dumps(payload).encode()
    return body, stripe_signature(body, secret)


def webhook(api: Api, payload: Any, secret: str = WEBHOOK_SECRET) -> Any:
    body, header = signed(payload, secret)
    return api.client.post(
        "/v1/stripe/webhooks",
        content=body,
        headers={"Stripe-Signature": header, "content-type": "application/json"},
    )


def test_run_then_read_the_report_as_json_and_csv(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    setup_stripe(api, emulator)
    api.ingest(event(quantity=4, ts="2026-03-10T09:00:00Z"))
    api.settle()
    run = api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03"})
    assert run.status_code == 200, run.text
    [report] = run.json()["data"]
    assert report["counts"] == {"ok": 0, "pending": 1, "drift": 0, "repaired": 0}
    [line] = report["lines"]
    assert (line["local"], line["stripe"], line["cause"]) == (4, 0, "events after the last push")
    assert line["stripe"] == 0 and line["status"] == "pending"
    assert line["target"] == "live"  # no shadow mode here: the line is the live meter's

    repaired = api.call(
        "POST", "/v1/reconciliation/run", json={"repair": True, "actor": "ops@acme"}
    )
    assert repaired.json()["data"][0]["lines"][0]["status"] == "repaired"
    assert repaired.json()["data"][0]["actor"].startswith("ops@acme (api-key:")
    api.settle()
    audit = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03")
    [push] = audit.json()["pushes"]
    assert push["purpose"].startswith("repair by ops@acme (api-key:")
    assert push["purpose"].endswith("events after the last push")
    api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03"})

    latest = api.call("GET", "/v1/reconciliation/2026-03", key="acme-read")
    assert latest.status_code == 200
    assert [(x["status"], x["local"], x["stripe"]) for x in latest.json()["lines"]] == [
        ("ok", 4, 4)
    ]
    # Another tenant neither sees this report nor has one of its own.
    assert api.call("GET", "/v1/reconciliation/2026-03", key="globex-all").status_code == 404
    as_csv = api.call("GET", "/v1/reconciliation/2026-03?format=csv", key="acme-read")
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = as_csv.text.strip().splitlines()
    assert rows[0].startswith("runId,customerRef,metric,period")
    assert len(rows) == 2 and ",ok," in rows[1]


def test_reconciliation_input_and_scopes(webhook_api: Api) -> None:
    api = webhook_api
    bad = api.call("POST", "/v1/reconciliation/run", json={"period": "March"})
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (422, "period")
    unknown_field = api.call("POST", "/v1/reconciliation/run", json={"perod": "2026-03"})
    assert unknown_field.status_code in (400, 422)
    assert api.call("POST", "/v1/reconciliation/run", key="acme-read").status_code == 403
    assert api.call("GET", "/v1/reconciliation/2026-03").status_code == 404
    fmt = api.call("GET", "/v1/reconciliation/2026-03?format=xml")
    assert (fmt.status_code, fmt.json()["errors"][0]["field"]) == (422, "format")


def test_adjustments_propose_approve_revert_with_actor_and_reason(
    webhook_api: Api,
) -> None:
    api = webhook_api
    api.ingest(event(quantity=10, ts="2026-03-10T09:00:00Z"))
    proposed = api.call(
        "POST",
        "/v1/adjustments",
        json={"customerRef": "cus_1", "metric": "api_calls", "quantity": "-3", "reason": "SLA"},
        headers={"Idempotency-Key": "credit-1"},
    )
    assert proposed.status_code == 201, proposed.text
    adjustment = proposed.json()
    assert adjustment["status"] == "pending"
    again = api.call(
        "POST",
        "/v1/adjustments",
        json={"customerRef": "cus_1", "metric": "api_calls", "quantity": "-3", "reason": "SLA"},
        headers={"Idempotency-Key": "credit-1"},
    )
    assert (again.status_code, again.json()["id"]) == (200, adjustment["id"])

    def current() -> str:
        api.settle()
        usage = api.call("GET", "/v1/usage/current?customerRef=cus_1", key="acme-read").json()
        return str(usage["counters"][0]["value"])

    assert current() == "10"  # pending: not counted
    path = f"/v1/adjustments/{adjustment['id']}"
    approved = api.call("POST", f"{path}/approve", json={"reason": "ok by finance"})
    assert approved.json()["status"] == "applied"
    assert approved.json()["appliedTo"] == "2026-03"
    assert current() == "7"
    twice = api.call("POST", f"{path}/approve", json={"reason": "again"})
    assert twice.status_code == 409
    reverted = api.call("POST", f"{path}/revert", json={"reason": "credit withdrawn"})
    assert reverted.json()["status"] == "reverted"
    assert current() == "10"
    listed = api.call("GET", "/v1/adjustments", key="acme-read").json()["data"]
    assert [(a["status"], a["decidedBy"].startswith("api-key:")) for a in listed] == [
        ("reverted", True)
    ]
    # Another tenant sees nothing and can decide nothing.
    assert api.call("GET", "/v1/adjustments", key="globex-all").json()["data"] == []
    other = api.call("POST", f"{path}/approve", key="globex-all", json={"reason": "x"})
    assert other.status_code == 404
    events = api.call("GET", "/v1/events?customerRef=cus_1", key="acme-read").json()["data"]
    assert [e["status"] for e in events] == ["counted", "correction", "correction"]
    metrics = api.client.get("/metrics").text
    assert 'stripemeter_corrections_total{outcome="approved"} 1.0' in metrics
    assert 'stripemeter_corrections_total{outcome="reverted"} 1.0' in metrics


def test_adjustment_input_errors(webhook_api: Api) -> None:
    api = webhook_api
    base = {"customerRef": "cus_1", "metric": "api_calls", "quantity": "1", "reason": "x"}
    for change, field in (
        ({"metric": "nope"}, None),
        ({"quantity": "0"}, "quantity"),
        ({"reason": " "}, "reason"),
    ):
        response = api.call("POST", "/v1/adjustments", json={**base, **change})
        assert response.status_code in (404, 422), response.text
        if field is not None:
            assert response.json()["errors"][0]["field"] == field
    assert (
        api.call("POST", "/v1/adjustments/not-a-uuid/approve", json={"reason": "x"}).json()[
            "errors"
        ][0]["field"]
        == "id"
    )


def test_an_unknown_decision_is_404_and_changes_nothing(webhook_api: Api) -> None:
    api = webhook_api
    proposed = api.call(
        "POST",
        "/v1/adjustments",
        json={"customerRef": "cus_1", "metric": "api_calls", "quantity": "2", "reason": "x"},
    ).json()
    odd = api.call("POST", f"/v1/adjustments/{proposed['id']}/cancel", json={"reason": "x"})
    assert odd.status_code == 404
    assert "approve, reject or revert" in odd.json()["detail"]
    api.settle()
    [listed] = api.call("GET", "/v1/adjustments").json()["data"]
    assert listed["status"] == "pending"


def test_webhooks_must_be_signed(webhook_api: Api) -> None:
    unsigned = webhook_api.client.post("/v1/stripe/webhooks", content=b"{}")
    assert unsigned.status_code == 422
    assert unsigned.json()["errors"][0]["field"] == "Stripe-Signature"
    forged = webhook(webhook_api, {"id": "evt_1", "type": "invoice.created"}, secret="whsec_x")
    assert forged.status_code == 422
    # Signed, but not an invoice anyone can read: a 4xx naming it, never a 500 Stripe retries.
    broken = {"id": "in_x", "billing_reason": "subscription_cycle", "period_start": "soon"}
    unreadable = webhook(
        webhook_api, {"id": "evt_2", "type": "invoice.created", "data": {"object": broken}}
    )
    assert unreadable.status_code == 422
    assert unreadable.json()["errors"][0]["field"] == "data.object.period_start"


def test_invoice_webhooks_close_the_period_and_record_parity(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    live = setup_stripe(api, emulator)
    api.ingest(event(quantity=6, ts="2026-03-10T09:00:00Z"))
    api.settle()
    push_all(api)
    app = services(api).stores.app
    tenant = app.tenant_by_slug("acme").id
    period_id = usage_period_id(tenant, "cus_1", "api_calls", "2026-03")
    invoice: dict[str, Any] = {
        "id": "in_test_1",
        "object": "invoice",
        "customer": live,
        "billing_reason": "subscription_cycle",
        "created": 1775001600,  # 2026-04-01T00:00Z
        "period_start": 1772323200,  # 2026-03-01T00:00Z
        "period_end": 1775001600,
        "automatically_finalizes_at": 1775005200,  # + 1 h
    }
    created = webhook(api, {"id": "evt_1", "type": "invoice.created", "data": {"object": invoice}})
    assert created.json() == {"received": "invoice.created", "periods": 1}
    period = app.repository.get(period_id)
    assert (period.invoice_id, period.closed) == ("in_test_1", False)
    api.settle()
    finalized = webhook(
        api, {"id": "evt_2", "type": "invoice.finalized", "data": {"object": invoice}}
    )
    assert finalized.json()["periods"] == 1
    period = app.repository.get(period_id)
    assert (period.closed, period.verdict) == (True, "parity")
    api.settle()
    audit = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03")
    closing = audit.json()["closing"]
    assert (closing["invoiceId"], closing["verdict"], closing["local"], closing["stripe"]) == (
        "in_test_1",
        "parity",
        6,
        6,
    )
    assert closing["closedAt"] is not None and closing["finalizesAt"] == "2026-04-01T01:00:00Z"


def test_an_invoice_other_than_a_cycle_leaves_the_open_period_open(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    """A proration (or a subscription's first invoice) is dated inside the open period.

    Its ``invoice.finalized`` once closed that period mid-cycle, and every
    later event of it then failed with a 500 (its correction had nowhere open
    to go).
    """
    api = webhook_api
    live = setup_stripe(api, emulator)
    api.ingest(event(quantity=6, ts="2026-03-10T09:00:00Z"))
    api.settle()
    moment = 1773144000  # 2026-03-10T12:00Z, inside the open March period
    invoice: dict[str, Any] = {
        "id": "in_update_1",
        "object": "invoice",
        "customer": live,
        "billing_reason": "subscription_update",
        "created": moment,
        "period_start": moment,
        "period_end": moment,
    }
    finalized = webhook(
        api, {"id": "evt_3", "type": "invoice.finalized", "data": {"object": invoice}}
    )
    assert finalized.json() == {"received": "invoice.finalized", "periods": 0}
    app = services(api).stores.app
    period = app.repository.get(
        usage_period_id(app.tenant_by_slug("acme").id, "cus_1", "api_calls", "2026-03")
    )
    assert (period.closed, period.verdict) == (False, None)
    later = api.ingest(event(quantity=2, ts="2026-03-10T10:00:00Z", idempotencyKey="k2"))
    assert later.status_code == 200
    assert [(r["status"], r.get("late")) for r in later.json()["results"]] == [("accepted", None)]


def test_current_usage_follows_the_customers_billing_anchor(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    live = emulator.client().v1.customers.create({"name": "anchored"}).id
    mapping = api.call("POST", "/v1/mappings", json={"metric": "api_calls", "createMeter": True})
    assert mapping.status_code == 201, mapping.text
    mapped = api.call(
        "POST",
        "/v1/customers",
        json={
            "customerRef": "cus_1",
            "stripeCustomerId": live,
            "billingCycleAnchor": "2026-01-05T10:30:00Z",
        },
    )
    assert mapped.status_code == 201, mapped.text
    api.ingest(event(quantity=3, ts="2026-03-10T09:00:00Z"))
    api.settle()
    current = api.call("GET", "/v1/usage/current?customerRef=cus_1", key="acme-read").json()
    assert (current["period"], current["periodStart"]) == (
        "2026-03-05T10:30:00Z",
        "2026-03-05T10:30:00Z",
    )
    assert [c["value"] for c in current["counters"]] == ["3"]


def test_an_invoice_for_another_cycle_than_ours_closes_nothing(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    """A customer whose billing anchor here is not Stripe's: refuse to guess which period."""
    api = webhook_api
    live = setup_stripe(api, emulator)  # calendar months here
    api.ingest(event(quantity=6, ts="2026-03-10T09:00:00Z"))
    api.settle()
    invoice = {
        "id": "in_other_cycle",
        "object": "invoice",
        "customer": live,
        "billing_reason": "subscription_cycle",
        "created": 1773316800,
        "period_start": 1770724800,  # 2026-02-10T12:00Z
        "period_end": 1773144000,  # 2026-03-10T12:00Z: not the end of March
        "automatically_finalizes_at": 1773320400,
    }
    for kind in ("invoice.created", "invoice.finalized"):
        answer = webhook(api, {"id": f"evt_{kind}", "type": kind, "data": {"object": invoice}})
        assert answer.json()["periods"] == 0
    app = services(api).stores.app
    tenant = app.tenant_by_slug("acme").id
    period = app.repository.get(usage_period_id(tenant, "cus_1", "api_calls", "2026-03"))
    assert (period.closed, period.invoice_id) == (False, None)


TIMESTAMP = "must be a Unix timestamp in whole seconds, 1970 to 2099"
MALFORMED_INVOICES: list[tuple[str, Any, str, str]] = [
    # (what is wrong, the value (None: left out), the field named, the reason given)
    (
        "period_start",
        1e20,
        "data.object.period_start",
        f"{TIMESTAMP} (expected `int`, got `float`)",
    ),
    (
        "period_start",
        10**20,
        "data.object.period_start",
        f"{TIMESTAMP} (expected `int` <= 4102444799)",
    ),
    ("period_start", -1, "data.object.period_start", f"{TIMESTAMP} (expected `int` >= 0)"),
    (
        "period_start",
        "soon",
        "data.object.period_start",
        f"{TIMESTAMP} (expected `int`, got `str`)",
    ),
    ("period_end", True, "data.object.period_end", f"{TIMESTAMP} (expected `int`, got `bool`)"),
    ("period_end", 1.5, "data.object.period_end", f"{TIMESTAMP} (expected `int`, got `float`)"),
    ("created", "yesterday", "data.object.created", f"{TIMESTAMP} (expected `int`, got `str`)"),
    (
        "automatically_finalizes_at",
        1e20,
        "data.object.automatically_finalizes_at",
        f"{TIMESTAMP} (expected `int | null`, got `float`)",
    ),
    ("customer", 123, "data.object.customer", "expected `str`, got `int`"),
    ("customer", {"id": "cus_1"}, "data.object.customer", "expected `str`, got `object`"),
    ("customer", "", "data.object.customer", "expected `str` of length >= 1"),
    ("id", None, "data.object.id", "is required"),
    ("period_end", None, "data.object.period_end", "is required"),
    ("billing_reason", 7, "data.object.billing_reason", "expected `str | null`, got `int`"),
]


@pytest.mark.parametrize(("name", "value", "field", "reason"), MALFORMED_INVOICES)
def test_a_signed_invoice_with_a_malformed_field_is_422_naming_it_and_changes_nothing(
    webhook_api: Api, emulator: RunningEmulator, name: str, value: Any, field: str, reason: str
) -> None:
    api = webhook_api
    live = setup_stripe(api, emulator)
    api.ingest(event(quantity=6, ts="2026-03-10T09:00:00Z"))
    api.settle()
    invoice: dict[str, Any] = {
        "id": "in_test_1",
        "object": "invoice",
        "customer": live,
        "billing_reason": "subscription_cycle",
        "created": 1775001600,
        "period_start": 1772323200,
        "period_end": 1775001600,
        "automatically_finalizes_at": 1775005200,
    }
    if value is None:
        del invoice[name]
    else:
        invoice[name] = value
    for kind in ("invoice.created", "invoice.finalized"):
        answer = webhook(api, {"id": "evt_1", "type": kind, "data": {"object": invoice}})
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"] == [{"field": field, "reason": reason}]
    app = services(api).stores.app
    period = app.repository.get(
        usage_period_id(app.tenant_by_slug("acme").id, "cus_1", "api_calls", "2026-03")
    )
    assert (period.invoice_id, period.finalizes_at, period.closed) == (None, None, False)


MALFORMED_EVENTS: list[tuple[str, Any, str, str]] = [
    ("a JSON list", [], "body", "Expected `object`, got `array`"),
    ("a JSON string", "invoice.created", "body", "Expected `object`, got `str`"),
    ("no type", {"id": "evt_1", "data": {"object": {}}}, "type", "is required"),
    ("a numeric type", {"id": "evt_1", "type": 5}, "type", "expected `str`, got `int`"),
    ("an empty type", {"type": ""}, "type", "expected `str` of length >= 1"),
    (
        "data.object as a string",
        {"id": "evt_1", "type": "invoice.created", "data": {"object": "in_1"}},
        "data.object",
        "expected `object`, got `str`",
    ),
    (
        "data as a list",
        {"id": "evt_1", "type": "invoice.finalized", "data": []},
        "data",
        "expected `object | null`, got `array`",
    ),
    (
        "no data for an invoice event",
        {"id": "evt_1", "type": "invoice.created"},
        "data.object",
        "is required: an invoice event carries the invoice",
    ),
    (
        "an invoice that is a list",
        {"id": "evt_1", "type": "invoice.created", "data": {"object": [1, 2]}},
        "data.object",
        "expected `object`, got `array`",
    ),
]


@pytest.mark.parametrize(("shape", "payload", "field", "reason"), MALFORMED_EVENTS)
def test_a_signed_malformed_event_is_422_naming_the_field(
    webhook_api: Api, shape: str, payload: Any, field: str, reason: str
) -> None:
    answer = webhook(webhook_api, payload)
    assert answer.status_code == 422, (shape, answer.text)
    assert answer.json()["errors"] == [{"field": field, "reason": reason}]


def test_a_signed_body_that_is_not_utf8_is_422(webhook_api: Api) -> None:
    body = b'{"type": "invoice.created", "x": "\xff"}'
    stamp = int(time.time())
    signature = hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    answer = webhook_api.client.post(
        "/v1/stripe/webhooks",
        content=body,
        headers={"Stripe-Signature": f"t={stamp},v1={signature.hexdigest()}"},
    )
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"field": "body", "reason": "must be JSON in UTF-8"}]


def test_an_event_of_another_kind_is_received_and_ignored(webhook_api: Api) -> None:
    answer = webhook(
        webhook_api, {"id": "evt_1", "type": "customer.created", "data": {"object": {}}}
    )
    assert answer.status_code == 200
    assert answer.json() == {"received": "customer.created", "periods": 0}
