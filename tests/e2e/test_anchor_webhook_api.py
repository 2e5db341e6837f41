"""A subscription's anchor reset in Stripe, followed through its webhook, billed in parity.

The customer is mapped to a subscription and has usage pushed; the
subscription is reset with ``billing_cycle_anchor[type]=now`` through the
SDK; Stripe's own events (read back from the emulator) are delivered signed
to StripeMeter; usage goes on, and the worker pushes and closes while time
passes both invoices' finalisation. Both the invoice Stripe cut and the next
cycle's bill exactly our totals for the two periods.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from domain.pushing import STRIPE_MAX_AGE, PushService, Target
from domain.usage import UsagePeriod, usage_period_id
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_reconciliation_api import webhook
from tests.e2e.test_stripe_api import services

MAPPED = datetime(2026, 3, 10, 12, tzinfo=UTC)  # where webhook_api puts the clock
RESET = datetime(2026, 3, 20, 12, tzinfo=UTC)
NEXT_END = datetime(2026, 4, 20, 12, tzinfo=UTC)
GRACE = timedelta(hours=1)  # the emulator's invoice grace


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def move_to(api: Api, emulator: RunningEmulator, moment: datetime) -> None:
    api.clock.now = moment
    emulator.set_now(ts(moment), frozen=True)


def work(api: Api) -> None:
    """One turn of the worker: views, pushes, closing (as tests/integration Service.work)."""
    svc = services(api)
    api.settle()
    pusher = PushService(svc.stores.app, svc.gateways, api.clock)
    for candidate in svc.stores.views.ledger.candidates("live", api.clock.now - STRIPE_MAX_AGE):
        if candidate.needs_push():
            pusher.push(candidate.usage_period_id, Target.LIVE)
    api.settle()
    svc.reconciliation().closer.close_due()
    api.settle()


def subscribed(api: Api, emulator: RunningEmulator) -> tuple[str, str]:
    """cus_1 mapped to a Stripe customer whose metered subscription is anchored at MAPPED."""
    stripe = emulator.client()
    mapping = api.call("POST", "/v1/mappings", json={"metric": "api_calls", "createMeter": True})
    assert mapping.status_code == 201, mapping.text
    price = stripe.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 1,
            "product_data": {"name": "API calls"},
            "recurring": {
                "interval": "month",
                "usage_type": "metered",
                "meter": mapping.json()["stripeMeterId"],
            },
        }
    )
    customer = stripe.v1.customers.create({"name": "Acme's customer"}).id
    sub = stripe.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
    mapped = api.call(
        "POST", "/v1/customers", json={"customerRef": "cus_1", "stripeCustomerId": customer}
    )
    assert mapped.status_code == 201, mapped.text
    return customer, sub.id


def stripe_events(emulator: RunningEmulator, kind: str) -> list[dict[str, Any]]:
    """The emulator's events of one type, oldest first, as Stripe would deliver them."""
    found = emulator.client().v1.events.list({"type": kind, "limit": 100}).data
    return [json.loads(str(e)) for e in reversed(found)]


def deliver(api: Api, payload: dict[str, Any]) -> int:
    answer = webhook(api, payload)
    assert answer.status_code == 200, answer.text
    handled: int = answer.json()["periods"]
    return handled


def period(api: Api, key: str) -> UsagePeriod:
    app = services(api).stores.app
    tenant: UUID = app.tenant_by_slug("acme").id
    found: UsagePeriod = app.repository.get(usage_period_id(tenant, "cus_1", "api_calls", key))
    return found


def test_both_invoices_of_a_reset_cycle_bill_our_totals(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    stripe = emulator.client()
    customer, sub = subscribed(api, emulator)
    first_key = iso(MAPPED)
    move_to(api, emulator, datetime(2026, 3, 15, tzinfo=UTC))
    api.ingest(event(quantity=10, ts="2026-03-12T09:00:00Z", idempotencyKey="a"))
    move_to(api, emulator, RESET - timedelta(hours=1))
    api.ingest(event(quantity=3, ts=iso(RESET - timedelta(hours=2)), idempotencyKey="b"))
    work(api)
    assert period(api, first_key).value == 13

    # Stripe resets the cycle; usage keeps arriving before its webhook is processed.
    move_to(api, emulator, RESET)
    stripe.v1.subscriptions.update(sub, {"billing_cycle_anchor": {"type": "now"}})
    move_to(api, emulator, RESET + timedelta(minutes=20))
    api.ingest(event(quantity=2, ts=iso(RESET + timedelta(minutes=10)), idempotencyKey="c"))
    [updated] = stripe_events(emulator, "customer.subscription.updated")
    assert deliver(api, updated) == 1
    [_, cut_created] = stripe_events(emulator, "invoice.created")  # after the first invoice
    assert cut_created["data"]["object"]["billing_reason"] == "subscription_update"
    assert deliver(api, cut_created) == 1

    # Nothing was pushed after the anchor: the cycle starts at the anchor itself, and the
    # usage stamped after it moved to the new period, where Stripe bills it.
    first, second = period(api, first_key), period(api, iso(RESET))
    assert (first.period_end, first.value, first.invoice_id) == (
        RESET,
        13,
        cut_created["data"]["object"]["id"],
    )
    assert (second.period_start, second.period_end, second.value) == (RESET, NEXT_END, 2)

    # More usage in the new period; the worker runs while the cut invoice finalises.
    move_to(api, emulator, RESET + timedelta(minutes=40))
    api.ingest(event(quantity=1, ts=iso(RESET - timedelta(minutes=5)), idempotencyKey="late"))
    work(api)  # the late unit is pushed into the cut period during its grace
    move_to(api, emulator, RESET + GRACE + timedelta(minutes=1))
    work(api)
    [cut_finalized] = stripe_events(emulator, "invoice.finalized")[-1:]
    assert cut_finalized["data"]["object"]["id"] == first.invoice_id
    deliver(api, cut_finalized)
    for day, quantity in ((25, 5), (40, 1)):
        moment = RESET + timedelta(days=day - 20)
        move_to(api, emulator, moment + timedelta(hours=1))
        api.ingest(event(quantity=quantity, ts=iso(moment), idempotencyKey=f"after-{day}"))
        work(api)
    move_to(api, emulator, NEXT_END + timedelta(minutes=1))
    work(api)
    [next_created] = stripe_events(emulator, "invoice.created")[-1:]
    assert next_created["data"]["object"]["billing_reason"] == "subscription_cycle"
    deliver(api, next_created)
    move_to(api, emulator, NEXT_END + GRACE + timedelta(minutes=1))
    work(api)
    [next_finalized] = stripe_events(emulator, "invoice.finalized")[-1:]
    deliver(api, next_finalized)
    work(api)

    first, second = period(api, first_key), period(api, iso(RESET))
    assert (first.value, second.value) == (14, 8)
    billed = {}
    for local in (first, second):
        assert (local.closed, local.verdict) == (True, "parity"), local.period
        assert local.invoice_id is not None
        invoice = stripe.v1.invoices.retrieve(local.invoice_id)
        assert invoice.status == "open"
        assert (invoice.period_start, invoice.period_end) == (
            ts(local.period_start),
            ts(local.period_end),
        )
        [line] = invoice.lines.data
        billed[invoice.billing_reason] = line.quantity
    assert billed == {"subscription_update": 14, "subscription_cycle": 8}
    assert emulator.client().v1.subscriptions.retrieve(sub).customer == customer


def test_usage_pushed_after_the_anchor_keeps_its_window_and_the_operator_is_told(
    webhook_api: Api, emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker pushed usage stamped after the anchor before the webhook came: Stripe
    holds it in its new period already, so the cycle starts when the webhook is processed
    (never moving what Stripe holds), and a warning says what to check."""
    api = webhook_api
    _, sub = subscribed(api, emulator)
    move_to(api, emulator, RESET)
    emulator.client().v1.subscriptions.update(sub, {"billing_cycle_anchor": {"type": "now"}})
    move_to(api, emulator, RESET + timedelta(minutes=20))
    api.ingest(event(quantity=2, ts=iso(RESET + timedelta(minutes=10)), idempotencyKey="x"))
    work(api)  # pushed, stamped ten minutes after the anchor
    processed = RESET + timedelta(minutes=30)
    move_to(api, emulator, processed)
    [updated] = stripe_events(emulator, "customer.subscription.updated")
    with caplog.at_level(logging.INFO, logger="adapters.cycle_changes"):
        assert deliver(api, updated) == 1

    app = services(api).stores.app
    customer = app.customer(app.tenant_by_slug("acme").id, "cus_1")
    assert customer is not None and customer.cycles[-1] == (processed, RESET)
    assert period(api, iso(MAPPED)).period_end == processed
    assert period(api, iso(MAPPED)).value == 2
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert "not from its anchor 2026-03-20 12:00:00" in message
    assert "GET /v1/audit/invoice" in message


def test_the_same_delivery_twice_changes_nothing_the_second_time(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    _, sub = subscribed(api, emulator)
    move_to(api, emulator, RESET)
    emulator.client().v1.subscriptions.update(sub, {"billing_cycle_anchor": {"type": "now"}})
    [updated] = stripe_events(emulator, "customer.subscription.updated")
    assert deliver(api, updated) == 1
    app = services(api).stores.app
    tenant = app.tenant_by_slug("acme").id
    customer = app.customer(tenant, "cus_1")
    assert customer is not None
    version = customer.version
    move_to(api, emulator, RESET + timedelta(hours=1))
    assert deliver(api, updated) == 0
    again = app.customer(tenant, "cus_1")
    assert again is not None and again.version == version
    assert again.cycles[-1] == (RESET, RESET)
    # An older delivery arriving late (the anchor before this one) moves nothing back.
    stale = json.loads(json.dumps(updated))
    stale["id"] = "evt_stale"
    stale["data"]["object"]["billing_cycle_anchor"] = ts(MAPPED)
    assert deliver(api, stale) == 0
    assert app.customer(tenant, "cus_1").billing_cycle_anchor == RESET  # type: ignore[union-attr]


def test_subscriptions_nobody_here_bills_are_acknowledged_and_change_nothing(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    customer, sub = subscribed(api, emulator)
    move_to(api, emulator, RESET)
    emulator.client().v1.subscriptions.update(sub, {"billing_cycle_anchor": {"type": "now"}})
    [updated] = stripe_events(emulator, "customer.subscription.updated")
    variants = {
        "a stranger's": {"customer": "cus_nobody"},
        "a canceled one": {"status": "canceled"},
        "another product's": {
            "items": {"data": [{"price": {"recurring": {"meter": "mtr_other"}}}]}
        },
    }
    for name, change in variants.items():
        payload = json.loads(json.dumps(updated))
        payload["data"]["object"].update(change)
        assert deliver(api, payload) == 0, name
    app = services(api).stores.app
    mapped = app.customer(app.tenant_by_slug("acme").id, "cus_1")
    assert mapped is not None and mapped.billing_cycle_anchor == MAPPED
    assert mapped.stripe_customer_id == customer


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"billing_cycle_anchor": "now"}, "data.object.billing_cycle_anchor"),
        ({"billing_cycle_anchor": 10**12}, "data.object.billing_cycle_anchor"),
        ({"billing_cycle_anchor": None}, "data.object.billing_cycle_anchor"),
        ({"customer": ""}, "data.object.customer"),
        ({"status": 7}, "data.object.status"),
        ({"items": {"data": [{"price": {"recurring": {"meter": 5}}}]}}, "data.object.items"),
    ],
)
def test_a_malformed_subscription_is_refused_by_its_field(
    webhook_api: Api, emulator: RunningEmulator, change: dict[str, Any], field: str
) -> None:
    api = webhook_api
    _, sub = subscribed(api, emulator)
    move_to(api, emulator, RESET)
    emulator.client().v1.subscriptions.update(sub, {"billing_cycle_anchor": {"type": "now"}})
    [updated] = stripe_events(emulator, "customer.subscription.updated")
    updated["data"]["object"].update(change)
    answer = webhook(api, updated)
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["field"].startswith(field), error
    app = services(api).stores.app
    mapped = app.customer(app.tenant_by_slug("acme").id, "cus_1")
    assert mapped is not None and mapped.billing_cycle_anchor == MAPPED


def test_a_subscription_event_without_its_object_is_refused(webhook_api: Api) -> None:
    answer = webhook(webhook_api, {"id": "evt_1", "type": "customer.subscription.updated"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "data.object"
