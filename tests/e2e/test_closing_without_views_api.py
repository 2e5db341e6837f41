"""Invoice webhooks close the right periods from the event log, whatever the views hold.

A rebuild empties the views and derives them again; a webhook that arrives in
between (or while the views merely lag) must still find its tenant, customer
and periods, and must still touch no other tenant.
"""

from __future__ import annotations

from typing import Any

from domain.pushing import PushOutcome, PushService, Target
from domain.usage import UsagePeriod, usage_period_id
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_reconciliation_api import webhook
from tests.e2e.test_remap_api import MARCH_INVOICE
from tests.e2e.test_stripe_api import services, setup_stripe


def empty_the_views(api: Api) -> None:
    """The first half of a rebuild: every view's rows and tracking dropped, none derived yet."""
    views = services(api).stores.views
    runner = views.runner
    runner._positions = None
    with runner.store.transaction() as tx:
        for projection in runner.projections:
            projection.clear(tx)
            tx.execute("DELETE FROM sm_tracking WHERE projection = ?", (projection.name,))
    assert views.reports.standings(None) == []


def test_invoice_webhooks_during_a_rebuild_close_and_settle_the_right_periods(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    acme_live = setup_stripe(api, emulator)
    # Globex has its own cus_1, billed through its own Stripe customer.
    globex_live = emulator.client().v1.customers.create({"name": "Globex's customer"}).id
    for body, path in (
        (
            {"metric": "api_calls", "stripeEventName": "globex_calls", "createMeter": True},
            "mappings",
        ),
        ({"customerRef": "cus_1", "stripeCustomerId": globex_live}, "customers"),
    ):
        answer = api.call("POST", f"/v1/{path}", key="globex-all", json=body)
        assert answer.status_code == 201, answer.text
    for key in ("acme-all", "globex-all"):
        api.ingest(event(quantity=6, ts="2026-03-10T09:00:00Z"), key=key)
    app = services(api).stores.app
    acme = app.tenant_by_slug("acme").id
    globex = app.tenant_by_slug("globex").id
    acme_march = usage_period_id(acme, "cus_1", "api_calls", "2026-03")
    globex_march = usage_period_id(globex, "cus_1", "api_calls", "2026-03")
    pusher = PushService(app, services(api).gateways, api.clock)
    for period_id in (acme_march, globex_march):
        assert pusher.push(period_id, Target.LIVE) == PushOutcome.CONFIRMED
    api.settle()
    empty_the_views(api)

    invoice: dict[str, Any] = {**MARCH_INVOICE, "customer": acme_live}
    created = webhook(api, {"id": "evt_1", "type": "invoice.created", "data": {"object": invoice}})
    assert created.json() == {"received": "invoice.created", "periods": 1}
    period: UsagePeriod = app.repository.get(acme_march)
    assert (period.invoice_id, period.closed) == ("in_march", False)
    finalized = webhook(
        api, {"id": "evt_2", "type": "invoice.finalized", "data": {"object": invoice}}
    )
    assert finalized.json() == {"received": "invoice.finalized", "periods": 1}
    period = app.repository.get(acme_march)
    assert (period.closed, period.verdict) == (True, "parity")
    # Delivered again: settled already, nothing more recorded.
    again = webhook(api, {"id": "evt_3", "type": "invoice.finalized", "data": {"object": invoice}})
    assert again.json() == {"received": "invoice.finalized", "periods": 0}
    # The other tenant's period with the same customer ref is untouched.
    other: UsagePeriod = app.repository.get(globex_march)
    assert (other.invoice_id, other.closed, other.verdict) == (None, False, None)

    # Once the views have caught up, they tell the same story.
    api.settle()
    audit = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03")
    closing = audit.json()["closing"]
    assert (closing["invoiceId"], closing["verdict"], closing["local"], closing["stripe"]) == (
        "in_march",
        "parity",
        6,
        6,
    )


def test_a_webhook_for_another_tenants_customer_touches_nothing_while_views_are_empty(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    setup_stripe(api, emulator)
    api.ingest(event(quantity=6, ts="2026-03-10T09:00:00Z"))
    app = services(api).stores.app
    acme_march = usage_period_id(app.tenant_by_slug("acme").id, "cus_1", "api_calls", "2026-03")
    api.settle()
    empty_the_views(api)
    # A Stripe customer of the same account that no tenant maps.
    stranger = emulator.client().v1.customers.create({"name": "nobody's"}).id
    invoice: dict[str, Any] = {**MARCH_INVOICE, "customer": stranger}
    for number, kind in enumerate(("invoice.created", "invoice.finalized")):
        answer = webhook(api, {"id": f"evt_{number}", "type": kind, "data": {"object": invoice}})
        assert answer.json() == {"received": kind, "periods": 0}
    period: UsagePeriod = app.repository.get(acme_march)
    assert (period.invoice_id, period.closed, period.verdict) == (None, False, None)
