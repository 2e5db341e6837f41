"""Webhook endpoints and signed deliveries, with a retried first failure."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from stripe_emulator.testing import RunningEmulator
from stripe_emulator.tests.helpers import make_meter


class Receiver:
    """A local HTTP endpoint that fails its first ``fail_first`` requests."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[bytes, str]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(receiver.statuses) < receiver.fail_first else 200
                receiver.statuses.append(status)
                if status == 200:
                    receiver.received.append((body, self.headers["Stripe-Signature"]))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"only {len(self.received)} deliveries"
            time.sleep(0.01)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(fail_first=1)
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_endpoint_crud_shows_secret_only_on_create(client: Any) -> None:
    endpoint = client.v1.webhook_endpoints.create(
        {"url": "https://example.com/hook", "enabled_events": ["invoice.created"]}
    )
    assert endpoint.secret.startswith("whsec_")
    retrieved = client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert "secret" not in retrieved
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [endpoint.id]
    updated = client.v1.webhook_endpoints.update(endpoint.id, {"disabled": True})
    assert updated.status == "disabled"
    assert client.v1.webhook_endpoints.delete(endpoint.id).deleted is True
    assert client.v1.webhook_endpoints.list().data == []


def test_invoice_events_are_signed_and_retried(
    client: Any, emu: RunningEmulator, receiver: Receiver
) -> None:
    endpoint = client.v1.webhook_endpoints.create(
        {"url": receiver.url, "enabled_events": ["invoice.created", "invoice.finalized"]}
    )
    meter = make_meter(client)
    price = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 5, "product_data": {"name": "calls"},
         "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id}}
    )  # fmt: skip
    customer = client.v1.customers.create({})
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    receiver.wait_for(2)
    events = [
        stripe.Webhook.construct_event(body, sig, endpoint.secret)
        for body, sig in receiver.received
    ]
    assert sorted(e.type for e in events) == ["invoice.created", "invoice.finalized"]
    assert all(e.data.object.customer == customer.id for e in events)
    assert receiver.statuses[0] == 500  # the first delivery failed ...
    # The emulator logs an attempt once the receiver has answered it: wait for the log.
    deadline = time.monotonic() + 5.0
    while not (retried := [a for a in emu.webhook_attempts() if a["attempt"] == 2]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert retried and retried[0]["delivered"]  # ... and was retried with success
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            receiver.received[0][0], receiver.received[0][1], "whsec_wrong"
        )


def test_error_report_is_delivered(client: Any, emu: RunningEmulator, receiver: Receiver) -> None:
    receiver.fail_first = 0
    endpoint = client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["*"]})
    make_meter(client)
    token = client.v2.billing.meter_event_session.create().authentication_token
    stream = stripe.StripeClient(token, base_addresses=emu.base_addresses, max_network_retries=0)
    stream.v2.billing.meter_event_stream.create(
        {
            "events": [
                {
                    "event_name": "api_calls",
                    "payload": {"stripe_customer_id": "cus_x", "value": "1"},
                }
            ]
        }
    )
    receiver.wait_for(1)
    event = stripe.Webhook.construct_event(*receiver.received[0], endpoint.secret)
    assert event.type == "billing.meter.error_report_triggered"
    assert event.data.object.reason.error_types[0].code == "meter_event_customer_not_found"


def test_retries_are_bounded(client: Any, emu: RunningEmulator, receiver: Receiver) -> None:
    receiver.fail_first = 100
    client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["invoice.created"]})
    meter = make_meter(client)
    price = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 5, "product_data": {"name": "calls"},
         "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id}}
    )  # fmt: skip
    client.v1.subscriptions.create(
        {"customer": client.v1.customers.create({}).id, "items": [{"price": price.id}]}
    )
    deadline = time.monotonic() + 5
    while len(receiver.statuses) < emu.config.webhook_max_attempts:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)  # longer than the remaining backoff: no further attempt comes
    assert len(receiver.statuses) == emu.config.webhook_max_attempts
    assert emu.webhooks.pending() == 0
