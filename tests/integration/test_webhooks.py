"""Outbound webhooks on both backends: the outbox, the sender, a real local receiver.

Each test drives the parts itself (outbox, views, sender) so that every step
is deterministic; the clock is the test's, the receiver a real HTTP server.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import UUID

import pytest

from adapters.persistence import Stores, open_stores
from adapters.settings import Settings, WebhookSettings
from adapters.webhooks import Webhooks
from domain.deliveries import Delivery, DeliveryStatus, Outcome, delivery_id_for
from domain.meters import Aggregation
from domain.periods import period_of
from domain.usage import UsagePeriod
from domain.webhook_endpoints import Endpoint, WebhookEndpointsService
from domain.webhook_signing import HEADER, verify
from domain.webhook_sources import source_event_id, webhook_event_id
from tests.conftest import FakeClock
from tests.webhook_receiver import Receiver, webhook_receiver

SETTINGS = WebhookSettings(timeout_seconds=5, retry_base_seconds=30, poll_seconds=0.05)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
def config(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhooks=SETTINGS)


@pytest.fixture
def tenant(stores: Stores) -> UUID:
    return stores.app.register_tenant("acme", "Acme").id


def close_a_period(stores: Stores, clock: FakeClock, tenant: UUID, customer: str) -> UsagePeriod:
    period = UsagePeriod.open(
        tenant, customer, "api_calls", Aggregation.SUM, period_of(clock() - timedelta(days=40))
    )
    period.record_usage("k1", Decimal("2.5"), period.period_start, "", late=False)
    period.close("the invoice was finalized")
    stores.app.save(period)
    return period


def settle(stores: Stores, webhooks: Webhooks) -> None:
    """The outbox, then the views (the deliveries it made), as the background threads would."""
    webhooks.outbox.catch_up()
    stores.views.runner.catch_up()


def send(stores: Stores, webhooks: Webhooks) -> dict[UUID, Outcome | None]:
    settle(stores, webhooks)
    result = webhooks.sender.send_due()
    stores.views.runner.catch_up()
    return result


def endpoint(stores: Stores, tenant: UUID, url: str, *types: str) -> Endpoint:
    return WebhookEndpointsService(stores.app).create(tenant, url, list(types) or ["*"])


def test_a_closed_period_is_delivered_signed_retried_after_a_500_then_succeeds(
    stores: Stores, clock: FakeClock, config: Settings, tenant: UUID, receiver: Receiver
) -> None:
    hook = endpoint(stores, tenant, receiver.url, "period.closed")
    webhooks = Webhooks(stores, config, clock)
    period = close_a_period(stores, clock, tenant, "cus_1")
    receiver.answer_next(500)

    first = send(stores, webhooks)
    assert list(first.values()) == [Outcome.RETRYING]
    (delivery_id,) = first
    source = source_event_id(period.id, period.version)
    assert delivery_id == delivery_id_for(hook.id, source)
    # Not due again before its backoff (30 s ± 20 %).
    clock.advance(seconds=20)
    assert send(stores, webhooks) == {}
    clock.advance(seconds=20)
    assert list(send(stores, webhooks).values()) == [Outcome.SUCCEEDED]

    assert len(receiver.received) == 2
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1  # every attempt sends the same bytes
    for request in receiver.received:
        verify(request.headers[HEADER.lower()], request.body, hook.secret, now=int(time.time()))
        assert request.headers["content-type"] == "application/json"
    sent = json.loads(receiver.received[0].body)
    assert sent["id"] == webhook_event_id(source)
    assert sent["type"] == "period.closed"
    assert sent["data"]["customerRef"] == "cus_1"
    assert sent["data"]["value"] == "2.5"
    assert sent["data"]["reason"] == "the invoice was finalized"

    delivery: Delivery = stores.app.repository.get(delivery_id)
    assert delivery.status is DeliveryStatus.SUCCEEDED and delivery.attempts == 2
    ((row, attempts),) = stores.views.webhook_deliveries.page(tenant, hook.id, None, 10)
    assert row.status == "succeeded" and row.next_attempt_at is None
    assert [(a.number, a.status_code, a.outcome) for a in attempts] == [
        (1, 500, "retrying"),
        (2, 200, "succeeded"),
    ]
    assert len(attempts[0].response_body) <= 1025  # truncated, not the receiver's 5 kB


def test_the_outbox_run_twice_or_replayed_from_the_start_makes_each_delivery_once(
    stores: Stores, clock: FakeClock, config: Settings, tenant: UUID, receiver: Receiver
) -> None:
    endpoint(stores, tenant, receiver.url)
    endpoint(stores, tenant, receiver.url + "/second", "parity.recorded")
    webhooks = Webhooks(stores, config, clock)
    close_a_period(stores, clock, tenant, "cus_1")
    webhooks.outbox.catch_up()
    webhooks.outbox.catch_up()
    assert webhooks.outbox.projection.created == 1  # the second endpoint wants parity only

    # As after a crash between saving the deliveries and moving the position.
    with stores.views.store.transaction() as tx:
        tx.execute("DELETE FROM sm_tracking WHERE projection = 'webhook_outbox'")
    again = Webhooks(stores, config, clock)
    again.outbox.catch_up()
    assert again.outbox.projection.created == 0
    stores.views.runner.catch_up()
    assert len(stores.views.webhook_deliveries.due(clock(), 100)) == 1


def test_an_endpoint_gets_only_what_happened_while_it_existed(
    stores: Stores, clock: FakeClock, config: Settings, tenant: UUID, receiver: Receiver
) -> None:
    webhooks = Webhooks(stores, config, clock)
    close_a_period(stores, clock, tenant, "cus_before")
    hook = endpoint(stores, tenant, receiver.url)
    close_a_period(stores, clock, tenant, "cus_during")
    settle(stores, webhooks)
    WebhookEndpointsService(stores.app).delete(tenant, hook.id)
    close_a_period(stores, clock, tenant, "cus_after")
    # A replay from the start decides the same: the subscribers follow the log.
    with stores.views.store.transaction() as tx:
        tx.execute("DELETE FROM sm_tracking WHERE projection = 'webhook_outbox'")
    replayed = Webhooks(stores, config, clock)
    settle(stores, replayed)
    assert replayed.outbox.projection.created == 0
    # The pending delivery of the deleted endpoint is abandoned, not sent.
    assert list(send(stores, replayed).values()) == [Outcome.FAILED]
    assert receiver.received == []
    ((row, attempts),) = stores.views.webhook_deliveries.page(tenant, hook.id, None, 10)
    assert row.status == "failed" and row.reason == "the endpoint was deleted"
    assert attempts == []


def test_another_tenants_events_never_reach_an_endpoint(
    stores: Stores, clock: FakeClock, config: Settings, tenant: UUID, receiver: Receiver
) -> None:
    other = stores.app.register_tenant("globex", "Globex").id
    endpoint(stores, tenant, receiver.url)
    webhooks = Webhooks(stores, config, clock)
    close_a_period(stores, clock, other, "cus_1")
    assert send(stores, webhooks) == {}
    assert receiver.received == []


def test_a_crash_after_the_claim_is_retried_after_the_lease_and_sent_once(
    settings: Settings, clock: FakeClock, config: Settings, receiver: Receiver
) -> None:
    stores = open_stores(settings, clock)
    tenant = stores.app.register_tenant("acme", "Acme").id
    endpoint(stores, tenant, receiver.url)
    webhooks = Webhooks(stores, config, clock)
    close_a_period(stores, clock, tenant, "cus_1")
    settle(stores, webhooks)
    (delivery_id,) = stores.views.webhook_deliveries.due(clock(), 10)
    # The sender claims the attempt and dies before the request.
    delivery: Delivery = stores.app.repository.get(delivery_id)
    delivery.start_attempt(clock(), webhooks.sender.lease)
    stores.app.save(delivery)
    stores.close()

    restarted = open_stores(settings, clock)
    try:
        fresh = Webhooks(restarted, config, clock)
        assert send(restarted, fresh) == {}  # leased: not yet
        clock.advance(seconds=fresh.sender.lease.total_seconds() + 1)
        assert list(send(restarted, fresh).values()) == [Outcome.SUCCEEDED]
        assert send(restarted, fresh) == {}
        assert len(receiver.received) == 1
        ((row, attempts),) = restarted.views.webhook_deliveries.page(
            tenant, only_endpoint(restarted, tenant), None, 10
        )
        assert row.status == "succeeded"
        assert [(a.number, a.outcome) for a in attempts] == [(1, None), (2, "succeeded")]
    finally:
        restarted.close()


def only_endpoint(stores: Stores, tenant: UUID) -> UUID:
    (only,) = WebhookEndpointsService(stores.app).endpoints(tenant).listed()
    return only.id


def test_a_redirect_is_not_followed_and_an_unreachable_endpoint_is_an_error_retried(
    stores: Stores, clock: FakeClock, config: Settings, tenant: UUID, receiver: Receiver
) -> None:
    redirecting = endpoint(stores, tenant, receiver.url, "period.closed")
    unreachable = endpoint(stores, tenant, "http://127.0.0.1:9/nothing-listens", "period.closed")
    webhooks = Webhooks(stores, config, clock)
    close_a_period(stores, clock, tenant, "cus_1")
    receiver.answer_next(302)
    assert list(send(stores, webhooks).values()) == [Outcome.RETRYING, Outcome.RETRYING]
    assert len(receiver.received) == 1  # the Location was not followed
    listing = stores.views.webhook_deliveries
    ((_, [moved]),) = listing.page(tenant, redirecting.id, None, 10)
    assert moved.status_code == 302
    assert moved.error == "redirects are not followed (Location: http://elsewhere.invalid/)"
    ((row, [refused]),) = listing.page(tenant, unreachable.id, None, 10)
    assert refused.status_code is None and refused.error.startswith("ConnectError")
    assert row.status == "pending" and row.next_attempt_at is not None


def test_a_delivery_past_its_retry_horizon_fails_and_is_not_tried_again(
    stores: Stores, clock: FakeClock, config: Settings, tenant: UUID, receiver: Receiver
) -> None:
    hook = endpoint(stores, tenant, receiver.url)
    once = WebhookSettings(timeout_seconds=5, retry_for_seconds=0)
    webhooks = Webhooks(stores, dataclasses.replace(config, webhooks=once), clock)
    close_a_period(stores, clock, tenant, "cus_1")
    receiver.answer_next(503)
    assert list(send(stores, webhooks).values()) == [Outcome.FAILED]
    clock.advance(days=4)
    assert send(stores, webhooks) == {}
    ((row, [attempt]),) = stores.views.webhook_deliveries.page(tenant, hook.id, None, 10)
    assert (row.status, row.next_attempt_at, attempt.outcome) == ("failed", None, "failed")
    assert len(receiver.received) == 1


def test_a_disabled_endpoint_gets_nothing_and_the_view_reads_every_delivery_event(
    stores: Stores, clock: FakeClock, config: Settings, tenant: UUID, receiver: Receiver
) -> None:
    WebhookEndpointsService(stores.app).create(tenant, receiver.url, ["*"], enabled=False)
    webhooks = Webhooks(stores, config, clock)
    close_a_period(stores, clock, tenant, "cus_1")
    assert send(stores, webhooks) == {}
    assert webhooks.outbox.projection.created == 0
    stored = {
        value
        for value in vars(Delivery).values()
        if isinstance(value, type) and issubclass(value, Delivery.Event)
    } - {Delivery.Event}
    assert stored == {
        Delivery.Created,
        Delivery.AttemptStarted,
        Delivery.AttemptRecorded,
        Delivery.Abandoned,
    }
    assert set(stores.views.webhook_deliveries.handles) == stored


@contextmanager
def answering(status: int, body: bytes) -> Iterator[str]:
    """A real local endpoint that answers every POST with ``status`` and ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_receiver_answering_a_nul_byte_does_not_stop_the_views(
    stores: Stores, clock: FakeClock, settings: Settings
) -> None:
    """An endpoint answering a NUL byte (a binary page, a dump) is recorded with the NUL
    replaced: PostgreSQL's TEXT refuses U+0000, and the deliveries view shares its
    transaction with every other view, so one tenant's endpoint would stop them all."""
    config = dataclasses.replace(settings, webhooks=SETTINGS)
    tenant = stores.app.register_tenant("acme", "Acme").id
    with answering(500, b"oops\x00binary") as url:
        endpoint(stores, tenant, url, "period.closed")
        webhooks = Webhooks(stores, config, clock)
        close_a_period(stores, clock, tenant, "cus_1")
        outcomes = send(stores, webhooks)  # sends, then catches the views up
    assert list(outcomes.values()) == [Outcome.RETRYING]
    rows = stores.views.webhook_deliveries.page(tenant, _only(stores, tenant), None, 10)
    [(_, attempts)] = rows
    assert attempts[0].status_code == 500
    assert stores.views.runner.lag().events == 0


def _only(stores: Stores, tenant: UUID) -> UUID:
    [hook] = WebhookEndpointsService(stores.app).endpoints(tenant).listed()
    return hook.id
