"""The v2 session + stream path: token auth, 100-event cap, asynchronous validation."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from stripe_emulator.testing import RunningEmulator
from stripe_emulator.tests.helpers import make_meter


def events(customer: str, n: int, value: str = "1") -> list[dict[str, Any]]:
    return [
        {"event_name": "api_calls", "identifier": f"s-{i}",
         "payload": {"stripe_customer_id": customer, "value": value}}
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def customer(client: Any) -> str:
    make_meter(client)
    return str(client.v1.customers.create({}).id)


def stream_client(emu: RunningEmulator, token: str) -> Any:
    return stripe.StripeClient(token, base_addresses=emu.base_addresses, max_network_retries=0)


def test_session_then_stream(client: Any, emu: RunningEmulator, customer: str) -> None:
    session = client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session"
    assert session.authentication_token
    assert (
        stream_client(emu, session.authentication_token).v2.billing.meter_event_stream.create(
            {"events": events(customer, 100)}
        )
        is None
    )
    assert emu.totals()[0]["value"] == 100


def test_stream_rejects_secret_key_and_unknown_token(
    client: Any, emu: RunningEmulator, customer: str
) -> None:
    with pytest.raises(stripe.AuthenticationError):
        client.v2.billing.meter_event_stream.create({"events": events(customer, 1)})
    with pytest.raises(stripe.AuthenticationError):
        stream_client(emu, "").v2.billing.meter_event_stream.create({"events": events(customer, 1)})


def test_expired_session(client: Any, emu: RunningEmulator, customer: str) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    emu.advance(15 * 60)
    with pytest.raises(stripe.AuthenticationError) as raised:
        stream_client(emu, token).v2.billing.meter_event_stream.create(
            {"events": events(customer, 1)}
        )
    assert raised.value.error.code == "billing_meter_event_session_expired"
    assert emu.meter_events() == []


def test_more_than_100_events(client: Any, emu: RunningEmulator, customer: str) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stream_client(emu, token).v2.billing.meter_event_stream.create(
            {"events": events(customer, 101)}
        )
    assert raised.value.http_status == 400
    assert emu.meter_events() == []


def test_invalid_events_are_accepted_then_reported(
    client: Any, emu: RunningEmulator, customer: str
) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    batch = [
        *events(customer, 2),
        {"event_name": "api_calls", "identifier": "bad-value",
         "payload": {"stripe_customer_id": customer, "value": "1.5"}},
        {"event_name": "api_calls", "identifier": "bad-customer",
         "payload": {"stripe_customer_id": "cus_nope", "value": "1"}},
        {"event_name": "api_calls", "identifier": "s-0",  # duplicate: dropped silently
         "payload": {"stripe_customer_id": customer, "value": "1"}},
    ]  # fmt: skip
    stream_client(emu, token).v2.billing.meter_event_stream.create({"events": batch})
    assert emu.totals()[0]["value"] == 2
    [report] = emu.error_reports()
    assert report["reason"]["error_count"] == 2
    codes = {t["code"] for t in report["reason"]["error_types"]}
    assert codes == {"meter_event_invalid_value", "meter_event_customer_not_found"}
    kinds = [e.type for e in client.v1.events.list().data]
    assert "billing.meter.error_report_triggered" in kinds


def test_a_call_that_fails_halfway_applies_the_first_half_then_answers_500(
    client: Any, emu: RunningEmulator, customer: str
) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    emu.fail_next("partial_then_500", path="/v2/billing/meter_event_stream")
    with pytest.raises(stripe.APIError) as raised:
        stream_client(emu, token).v2.billing.meter_event_stream.create(
            {"events": events(customer, 5)}
        )
    assert raised.value.http_status == 500
    assert [e["identifier"] for e in emu.meter_events()] == ["s-0", "s-1", "s-2"]
    # Resending the whole call is the cure: the stream drops what it already holds.
    stream_client(emu, token).v2.billing.meter_event_stream.create({"events": events(customer, 5)})
    assert emu.totals()[0]["value"] == 5


def test_the_sdk_retry_of_a_call_that_failed_halfway_counts_each_event_once(
    emu: RunningEmulator, customer: str
) -> None:
    retrying = emu.client(max_network_retries=2)
    token = retrying.v2.billing.meter_event_session.create().authentication_token
    emu.fail_next("partial_then_500", path="/v2/billing/meter_event_stream")
    stripe.StripeClient(
        token, base_addresses=emu.base_addresses, max_network_retries=2
    ).v2.billing.meter_event_stream.create({"events": events(customer, 4)})
    assert len(emu.meter_events()) == 4
    assert emu.totals()[0]["value"] == 4
