"""Outbound webhooks, in memory: endpoints, signatures, the retry schedule, a delivery's life."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.deliveries import Delivery, DeliveryStatus, Outcome, RetryPolicy, delivery_id_for
from domain.errors import ConflictError, InvalidInputError, NotFoundError
from domain.webhook_endpoints import MAX_ENDPOINTS, WebhookEndpoints, check_url
from domain.webhook_signing import SignatureError, sign, verify
from domain.webhook_sources import payload, source_event_id, webhook_event_id

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
TENANT = uuid.UUID(int=1)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "is required"),
        ("ftp://example.com/hook", "must start with http:// or https://"),
        ("https:///hook", "must name a host"),
        ("https://user:pw@example.com/", "must not carry a user name or password"),
        ("https://example.com/#x", "must not have a #fragment"),
        ("https://example.com:99999/", "is not a valid URL"),
        ("https://exa mple.com/", "must not contain spaces"),
        ("https://example.com/" + "a" * 2048, "must be at most 2048 characters"),
    ],
)
def test_a_bad_url_is_refused_naming_the_field(url: str, reason: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        check_url(url)
    assert refused.value.field == "url"
    assert refused.value.reason.startswith(reason)


def test_endpoints_get_new_ids_secrets_and_stop_at_the_limit() -> None:
    endpoints = WebhookEndpoints.start(TENANT)
    first = endpoints.add("https://example.com/a", ["period.closed", "period.closed"])
    assert first.event_types == ("period.closed",)
    assert first.secret.startswith("whsec_")
    assert first.secret not in repr(first) and first.secret not in repr(endpoints)
    everything = endpoints.add("http://127.0.0.1:8080/b", ["*", "drift.detected"])
    assert everything.event_types == ("*",)
    assert everything.wants("parity.recorded") and not first.wants("parity.recorded")
    assert first.id != everything.id and first.secret != everything.secret
    endpoints.delete(first.id)
    with pytest.raises(NotFoundError):
        endpoints.endpoint(first.id)
    # The next endpoint never reuses the deleted one's id.
    assert endpoints.add("https://example.com/c", ["*"]).id not in (first.id, everything.id)
    while len(endpoints.endpoints) < MAX_ENDPOINTS:
        endpoints.add("https://example.com/more", ["*"])
    with pytest.raises(ConflictError):
        endpoints.add("https://example.com/one-too-many", ["*"])
    with pytest.raises(InvalidInputError) as refused:
        endpoints.add("https://example.com", ["invoice.paid"])
    assert refused.value.field == "enabledEvents"


def test_a_signature_verifies_and_refuses_tampering_other_secrets_and_old_replays() -> None:
    body = b'{"id":"evt_1"}'
    header = sign("whsec_a", 1_700_000_000, body)
    assert verify(header, body, "whsec_a", now=1_700_000_100) == 1_700_000_000
    for bad_body, secret, now in (
        (b'{"id":"evt_2"}', "whsec_a", 1_700_000_000),
        (body, "whsec_b", 1_700_000_000),
        (body, "whsec_a", 1_700_000_301),
    ):
        with pytest.raises(SignatureError):
            verify(header, bad_body, secret, now=now)
    with pytest.raises(SignatureError):
        verify("v1=abc", body, "whsec_a", now=1_700_000_000)


def test_the_backoff_doubles_with_jitter_and_gives_up_after_the_horizon() -> None:
    policy = RetryPolicy(timedelta(seconds=30), timedelta(hours=6), timedelta(days=3))
    assert policy.delay(1, 0.5) == timedelta(seconds=30)
    assert policy.delay(4, 0.5) == timedelta(seconds=240)
    assert timedelta(seconds=24) <= policy.delay(1, 0.0) < policy.delay(1, 0.999)
    assert policy.delay(30, 0.5) == timedelta(hours=6)
    # Attempts until the horizon: about twenty over three days with these settings.
    at, attempts = NOW, 0
    while at is not None:
        attempts += 1
        at = policy.next_attempt(NOW, attempts, at, 0.5)
    assert 15 <= attempts <= 25


def test_a_delivery_retries_then_succeeds_and_its_id_is_deterministic() -> None:
    endpoint, source = uuid.uuid4(), source_event_id(uuid.UUID(int=7), 3)
    assert source == source_event_id(uuid.UUID(int=7), 3)
    body = payload(webhook_event_id(source), "period.closed", NOW, {"metric": "api_calls"})
    assert json.loads(body) == {
        "id": webhook_event_id(source),
        "type": "period.closed",
        "created": int(NOW.timestamp()),
        "data": {"metric": "api_calls"},
    }
    delivery = Delivery.create(
        TENANT, endpoint, source, webhook_event_id(source), "period.closed", body, NOW
    )
    assert delivery.id == delivery_id_for(endpoint, source)
    policy = RetryPolicy()
    assert delivery.start_attempt(NOW, timedelta(seconds=60)) == 1
    assert not delivery.is_due(NOW + timedelta(seconds=59))  # claimed: leased
    outcome = delivery.record_attempt(
        policy, NOW, 0.5, status_code=500, error="", duration_ms=3, response_body="oops"
    )
    assert outcome is Outcome.RETRYING and delivery.status is DeliveryStatus.PENDING
    assert delivery.due_at == NOW + timedelta(seconds=30)
    later = NOW + timedelta(seconds=30)
    assert delivery.start_attempt(later, timedelta(seconds=60)) == 2
    outcome = delivery.record_attempt(
        policy, later, 0.5, status_code=204, error="", duration_ms=3, response_body=""
    )
    assert outcome is Outcome.SUCCEEDED and delivery.status is DeliveryStatus.SUCCEEDED
    assert not delivery.is_due(later + timedelta(days=1))
    assert not delivery.abandon("endpoint deleted")
