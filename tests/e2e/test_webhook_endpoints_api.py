"""Outbound webhooks over HTTP: endpoints, real closings delivered to a real receiver, listings.

The receiver is a real HTTP server in a thread (tests/webhook_receiver.py);
signatures are checked with the same logic docs/webhooks.md gives receivers.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from adapters.settings import Settings, WebhookSettings
from adapters.webhooks import Webhooks
from api.app import create_app
from domain.drift import DriftFinding
from domain.pushing import PushOutcome, PushService, Target
from domain.usage import usage_period_id
from domain.webhook_signing import HEADER, SignatureError, verify
from stripe_emulator.testing import RunningEmulator
from tests.conftest import FakeClock
from tests.e2e.conftest import Api, event
from tests.e2e.test_reconciliation_api import webhook
from tests.e2e.test_remap_api import MARCH_INVOICE
from tests.e2e.test_stripe_api import services, setup_stripe
from tests.webhook_receiver import Receiver, node_doc_verify, python_doc_verify, webhook_receiver

FAST = WebhookSettings(timeout_seconds=5, retry_base_seconds=30, poll_seconds=0.05)
PATH = "/v1/webhook-endpoints"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


def with_fast_hooks(api: Api) -> Settings:
    """The API's settings, with webhooks that retry after 30 s and poll every 50 ms."""
    settings: Settings = services(api).settings
    return dataclasses.replace(settings, webhooks=FAST)


def create(api: Api, url: str, *types: str, key: str = "acme-all") -> dict[str, Any]:
    answer = api.call("POST", PATH, key, json={"url": url, "enabledEvents": list(types) or ["*"]})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def check_signed(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every request verified as a receiver would: with the snippets of docs/webhooks.md
    (Python; Node when it is installed) and the service's own ``verify``. Then its JSON."""
    doc_verify = python_doc_verify()
    for request in receiver.received:
        header = request.headers[HEADER.lower()]
        verify(header, request.body, secret, now=int(time.time()))
        doc_verify(header, request.body, secret)
        if shutil.which("node"):
            assert node_doc_verify(header, request.body, secret)
    return [json.loads(r.body) for r in receiver.received]


def drive(api: Api, webhooks: Webhooks) -> dict[Any, Any]:
    """One pass of what the background does: outbox, views, sender, views."""
    webhooks.outbox.catch_up()
    api.settle()
    sent = webhooks.sender.send_due()
    api.settle()
    return sent


def test_endpoints_are_created_read_and_deleted_per_tenant_and_the_secret_is_shown_once(
    api: Api,
) -> None:
    for body, field, reason in (
        ({"url": "ftp://x.example/", "enabledEvents": ["*"]}, "url", "must start with http"),
        ({"url": "https://x.example/", "enabledEvents": ["nope"]}, "enabledEvents", "'nope'"),
        ({"url": "https://x.example/", "enabledEvents": []}, "enabledEvents", "at least one"),
        ({"enabledEvents": ["*"]}, "url", "is required"),
        ({"url": 5, "enabledEvents": ["*"]}, "url", ""),
        ({"url": "https://x.example/", "enabledEvents": ["*"], "extra": 1}, "extra", ""),
    ):
        refused = api.call("POST", PATH, json=body)
        assert refused.status_code == 422, (body, refused.text)
        [error] = refused.json()["errors"]
        assert error["field"] == field and reason in error["reason"], error
    assert (
        api.call("POST", PATH, "acme-read", json={"url": "https://x.example/"}).status_code == 403
    )

    made = create(api, "https://hooks.acme.example/stripemeter", "period.closed", "drift.detected")
    assert made["secret"].startswith("whsec_")
    assert made["enabledEvents"] == ["drift.detected", "period.closed"]
    listed = api.call("GET", PATH, "acme-read").json()["data"]
    assert [e["id"] for e in listed] == [made["id"]]
    assert "secret" not in listed[0] and made["secret"] not in json.dumps(listed)
    one = api.call("GET", f"{PATH}/{made['id']}", "acme-read")
    assert one.status_code == 200 and "secret" not in one.json()
    # Another tenant: not found, whatever it asks of the endpoint.
    for method, suffix in (("GET", ""), ("GET", "/deliveries"), ("DELETE", "")):
        other = api.call(method, f"{PATH}/{made['id']}{suffix}", "globex-all")
        assert other.status_code == 404, (method, suffix)
    assert api.call("GET", PATH, "globex-all").json()["data"] == []
    bad_id = api.call("GET", f"{PATH}/not-a-uuid")
    assert (bad_id.status_code, bad_id.json()["errors"][0]["field"]) == (422, "id")
    bad_limit = api.call("GET", f"{PATH}/{made['id']}/deliveries?limit=0")
    assert bad_limit.json()["errors"][0]["field"] == "limit"

    assert api.call("DELETE", f"{PATH}/{made['id']}", "acme-read").status_code == 403
    assert api.call("DELETE", f"{PATH}/{made['id']}").status_code == 204
    assert api.call("GET", f"{PATH}/{made['id']}").status_code == 404
    assert api.call("DELETE", f"{PATH}/{made['id']}").status_code == 404
    assert api.call("GET", PATH).json()["data"] == []


def close_march(api: Api, emulator: RunningEmulator) -> None:
    """Usage, pushed, then Stripe's invoice webhooks: the period closes and parity is recorded."""
    live = setup_stripe(api, emulator)
    api.ingest(event(quantity=6, ts="2026-03-10T09:00:00Z"))
    app = services(api).stores.app
    acme = app.tenant_by_slug("acme").id
    pusher = PushService(app, services(api).gateways, api.clock)
    march = usage_period_id(acme, "cus_1", "api_calls", "2026-03")
    assert pusher.push(march, Target.LIVE) == PushOutcome.CONFIRMED
    invoice = {**MARCH_INVOICE, "customer": live}
    for number, kind in enumerate(("invoice.created", "invoice.finalized")):
        answer = webhook(api, {"id": f"evt_{number}", "type": kind, "data": {"object": invoice}})
        assert answer.json()["periods"] == 1, answer.text


def test_a_closing_is_delivered_signed_retried_after_a_500_and_listed_with_its_attempts(
    webhook_api: Api, emulator: RunningEmulator, receiver: Receiver
) -> None:
    api = webhook_api
    hook = create(api, receiver.url, "period.closed", "parity.recorded")
    other = create(api, receiver.url + "/globex", key="globex-all")
    webhooks = Webhooks(services(api).stores, with_fast_hooks(api), api.clock)
    close_march(api, emulator)
    receiver.answer_next(500, 500)

    first = drive(api, webhooks)
    assert [o.value for o in first.values()] == ["retrying", "retrying"]
    api.clock.advance(seconds=40)  # past the first backoff (30 s ± 20 %)
    second = drive(api, webhooks)
    assert [o.value for o in second.values()] == ["succeeded", "succeeded"]
    assert drive(api, webhooks) == {}

    assert {r.path for r in receiver.received} == {"/hooks"}  # nothing for the other tenant
    payloads = check_signed(receiver, hook["secret"])
    with pytest.raises(SignatureError):
        check_signed(receiver, other["secret"])
    # The documented snippets refuse a wrong secret and a changed body too.
    request = receiver.received[0]
    header = request.headers[HEADER.lower()]
    with pytest.raises(ValueError, match="no signature matches"):
        python_doc_verify()(header, request.body, other["secret"])
    with pytest.raises(ValueError, match="no signature matches"):
        python_doc_verify()(header, request.body + b" ", hook["secret"])
    if shutil.which("node"):
        assert not node_doc_verify(header, request.body, other["secret"])
        assert not node_doc_verify(header, request.body + b" ", hook["secret"])
    by_type = {p["type"]: p for p in payloads}
    assert set(by_type) == {"period.closed", "parity.recorded"}
    closed = by_type["period.closed"]["data"]
    assert (closed["customerRef"], closed["metric"], closed["period"]) == (
        "cus_1",
        "api_calls",
        "2026-03",
    )
    assert (closed["value"], closed["invoiceId"]) == ("6", "in_march")
    parity = by_type["parity.recorded"]["data"]
    assert (parity["verdict"], parity["localUnits"], parity["stripeTotal"]) == ("parity", 6, 6)
    assert len({p["id"] for p in payloads}) == 2  # two events, each sent twice: same id

    listing = api.call("GET", f"{PATH}/{hook['id']}/deliveries", "acme-read")
    assert listing.status_code == 200, listing.text
    deliveries = listing.json()["data"]
    assert sorted(d["type"] for d in deliveries) == ["parity.recorded", "period.closed"]
    for delivery in deliveries:
        assert delivery["status"] == "succeeded" and delivery["nextAttemptAt"] is None
        assert delivery["eventId"] in {p["id"] for p in payloads}
        attempts = [(a["number"], a["statusCode"], a["outcome"]) for a in delivery["attempts"]]
        assert attempts == [(1, 500, "retrying"), (2, 200, "succeeded")]
        assert all(a["durationMs"] is not None and a["startedAt"] for a in delivery["attempts"])
    page = api.call("GET", f"{PATH}/{hook['id']}/deliveries?limit=1", "acme-read").json()
    rest = api.call(
        "GET", f"{PATH}/{hook['id']}/deliveries?limit=1&cursor={page['nextCursor']}", "acme-read"
    ).json()
    assert [page["data"][0]["id"], rest["data"][0]["id"]] == [d["id"] for d in deliveries]


def test_a_drift_found_by_reconciliation_is_delivered_once_however_many_runs_see_it(
    webhook_api: Api, emulator: RunningEmulator, receiver: Receiver
) -> None:
    api = webhook_api
    hook = create(api, receiver.url, "drift.detected")
    webhooks = Webhooks(services(api).stores, with_fast_hooks(api), api.clock)
    setup_stripe(api, emulator)
    api.ingest(event(quantity=4, ts="2026-03-10T09:00:00Z"))
    app = services(api).stores.app
    march = usage_period_id(app.tenant_by_slug("acme").id, "cus_1", "api_calls", "2026-03")
    PushService(app, services(api).gateways, api.clock).push(march, Target.LIVE)
    # Someone sends usage to the meter behind StripeMeter's back.
    customer = app.customer(app.tenant_by_slug("acme").id, "cus_1")
    assert customer is not None
    emulator.client().v1.billing.meter_events.create(
        {
            "event_name": "api_calls",
            "payload": {"stripe_customer_id": customer.stripe_customer_id, "value": "3"},
            "timestamp": int(api.clock.now.timestamp()) - 60,
        }
    )
    api.settle()
    for _ in range(3):
        run = api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03"})
        assert run.json()["data"][0]["lines"][0]["status"] == "drift", run.text
    assert [o.value for o in drive(api, webhooks).values()] == ["succeeded"]
    assert drive(api, webhooks) == {}
    [sent] = check_signed(receiver, hook["secret"])
    assert sent["type"] == "drift.detected"
    data = sent["data"]
    assert (data["local"], data["stripe"], data["difference"]) == (4, 7, -3)
    assert data["cause"] == "events sent to Stripe outside StripeMeter"


def test_a_restart_between_creating_and_sending_sends_each_delivery_exactly_once(
    clock: FakeClock, webhook_api: Api, receiver: Receiver
) -> None:
    """The embedded default's background (outbox and sender in the API process) finishes
    what a stopped process left: one request per delivery."""
    api = webhook_api
    hook = create(api, receiver.url, "drift.detected")
    stores = services(api).stores
    # A drift recorded as the reconciler does, then the outbox makes its delivery...
    acme = stores.app.tenant_by_slug("acme").id
    finding = DriftFinding.detect(
        acme,
        usage_period_id(acme, "cus_1", "api_calls", "2026-03"),
        customer_ref="cus_1",
        metric="api_calls",
        period="2026-03",
        target="live",
        stripe_customer_id="cus_stripe",
        meter_id="mtr_1",
        local=4,
        stripe=5,
        expected=4,
        cause="events sent to Stripe outside StripeMeter",
        closed=False,
        actor="system:schedule",
    )
    stores.app.save(finding)
    first = Webhooks(stores, with_fast_hooks(api), clock)
    first.outbox.catch_up()
    assert first.outbox.projection.created == 1
    # ... and the process stops before its sender runs: a fresh app on the same database.
    api.client.__exit__(None, None, None)
    restarted = dataclasses.replace(
        api.client.app.state.services.settings,
        embedded_worker=True,
        writer_mode="thread",
        webhooks=FAST,
    )
    with TestClient(app=create_app(restarted, clock)) as client:
        deadline = time.monotonic() + 20
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # time enough for a second send, were there one
        assert client.app.state.services.settings.embedded_worker
    assert len(receiver.received) == 1
    [sent] = check_signed(receiver, hook["secret"])
    assert sent["type"] == "drift.detected" and sent["data"]["difference"] == -1


def test_a_hard_cap_reached_is_delivered_once_as_cap_reached(
    webhook_api: Api, receiver: Receiver
) -> None:
    api = webhook_api
    hook = create(api, receiver.url, "cap.reached")
    webhooks = Webhooks(services(api).stores, with_fast_hooks(api), api.clock)
    put = api.call(
        "PUT", "/v1/caps/api_calls", json={"customerRef": "cus_1", "limit": 5, "mode": "hard"}
    )
    assert put.status_code == 200, put.text
    # 4 fits, the next 4 would pass 5 (refused: the cap is reached at 4 counted), 1 fits,
    # 1 more is refused again: still one cap.reached for the period.
    outcomes = []
    for n, quantity in enumerate((4, 4, 1, 1)):
        answer = api.ingest(
            event(quantity=quantity, ts="2026-03-10T09:00:00Z", idempotencyKey=f"k{n}")
        )
        outcomes.append(answer.json()["results"][0]["status"])
    assert outcomes == ["accepted", "error", "accepted", "error"]
    api.settle()
    assert [o.value for o in drive(api, webhooks).values()] == ["succeeded"]
    assert drive(api, webhooks) == {}
    [sent] = check_signed(receiver, hook["secret"])
    assert sent["type"] == "cap.reached"
    data = sent["data"]
    assert (data["customerRef"], data["metric"], data["mode"]) == ("cus_1", "api_calls", "hard")
    assert (data["limit"], data["value"]) == ("5", "4")  # first refused at 4 counted


def test_an_alert_s_trigger_and_resolve_are_delivered(webhook_api: Api, receiver: Receiver) -> None:
    api = webhook_api
    hook = create(api, receiver.url, "alert.triggered", "alert.resolved")
    webhooks = Webhooks(services(api).stores, with_fast_hooks(api), api.clock)
    rule = {"metric": "api_calls", "customerRef": "cus_1", "kind": "usage", "threshold": 10}
    alert = api.call("POST", "/v1/alerts", json=rule).json()
    api.ingest(event(quantity=12, ts="2026-03-10T09:00:00Z"))
    api.settle()
    disabled = {
        **rule,
        "basis": None,
        "currency": None,
        "enabled": False,
        "cooldownSeconds": 3600,
    }
    assert api.call("PUT", f"/v1/alerts/{alert['id']}", json=disabled).status_code == 200
    api.settle()
    assert [o.value for o in drive(api, webhooks).values()] == ["succeeded"] * 2
    sent = sorted(check_signed(receiver, hook["secret"]), key=lambda s: s["type"])
    assert [s["type"] for s in sent] == ["alert.resolved", "alert.triggered"]
    resolved, triggered = (s["data"] for s in sent)
    assert (triggered["alertId"], triggered["customerRef"], triggered["kind"]) == (
        alert["id"],
        "cus_1",
        "usage",
    )
    assert (triggered["threshold"], triggered["observed"]) == ("10", "12")
    assert resolved["reason"] == "alert_disabled"
    assert resolved["incidentId"] == triggered["incidentId"]
