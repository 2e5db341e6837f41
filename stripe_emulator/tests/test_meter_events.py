"""Meter events (v1 and v2) and adjustments, with every rejection Stripe makes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from stripe_emulator.testing import RunningEmulator
from stripe_emulator.tests.helpers import make_meter, send

DAY = 86_400


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def customer(client: Any, emu: RunningEmulator) -> str:
    # Frozen time: window edges are checked to the second, real time would tick in between.
    emu.set_now(emu.now(), frozen=True)
    make_meter(client)
    return str(client.v1.customers.create({"email": "usage@example.com"}).id)


def test_v1_event_is_stored_with_its_identifier(
    client: Any, emu: RunningEmulator, customer: str
) -> None:
    now = emu.now()
    event = send(client, customer, 42, identifier="evt-1", timestamp=now - 60)
    assert event.object == "billing.meter_event"
    assert event.identifier == "evt-1"
    assert event.timestamp == now - 60
    assert event.payload["value"] == "42"
    [stored] = emu.meter_events(customer=customer)
    assert (stored["identifier"], stored["value"], stored["source"]) == ("evt-1", 42, "v1")


def test_v2_event(client: Any, emu: RunningEmulator, customer: str) -> None:
    event = client.v2.billing.meter_events.create(
        {
            "event_name": "api_calls",
            "payload": {"stripe_customer_id": customer, "value": "-3"},
            "identifier": "v2-1",
            "timestamp": iso(emu.now() - 10),
        }
    )
    assert event.object == "v2.billing.meter_event"
    assert event.identifier == "v2-1"
    assert emu.totals()[0]["value"] == -3  # negative corrections are allowed


def test_module_style_meter_event(module_stripe: Any, emu: RunningEmulator) -> None:
    stripe.billing.Meter.create(
        display_name="m", event_name="api_calls", default_aggregation={"formula": "sum"}
    )
    customer = stripe.Customer.create(name="Module")
    event = stripe.billing.MeterEvent.create(
        event_name="api_calls", payload={"stripe_customer_id": customer.id, "value": "5"}
    )
    assert event.identifier  # generated when not given
    assert emu.totals()[0]["value"] == 5


@pytest.mark.parametrize(
    ("offset", "code"),
    [(-(35 * DAY) - 60, "timestamp_too_far_in_past"), (301, "timestamp_in_future")],
)
def test_timestamp_window(
    client: Any, emu: RunningEmulator, customer: str, offset: int, code: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(client, customer, timestamp=emu.now() + offset)
    assert raised.value.code == code
    assert raised.value.param == "timestamp"
    assert raised.value.http_status == 400
    assert emu.meter_events() == []


def test_timestamp_window_edges_are_accepted(
    client: Any, emu: RunningEmulator, customer: str
) -> None:
    send(client, customer, timestamp=emu.now() - 35 * DAY + 60)
    send(client, customer, timestamp=emu.now() + 240)
    assert len(emu.meter_events()) == 2


def test_v2_timestamp_too_old(client: Any, emu: RunningEmulator, customer: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v2.billing.meter_events.create(
            {
                "event_name": "api_calls",
                "payload": {"stripe_customer_id": customer, "value": "1"},
                "timestamp": iso(emu.now() - 40 * DAY),
            }
        )
    assert raised.value.code == "timestamp_too_far_in_past"


def test_duplicate_identifier_within_24h(client: Any, emu: RunningEmulator, customer: str) -> None:
    send(client, customer, 1, identifier="dup")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(client, customer, 1, identifier="dup")
    assert raised.value.param == "identifier"
    with pytest.raises(stripe.InvalidRequestError):
        client.v2.billing.meter_events.create(
            {
                "event_name": "api_calls",
                "payload": {"stripe_customer_id": customer, "value": "1"},
                "identifier": "dup",
            }
        )
    assert emu.totals()[0]["value"] == 1
    emu.advance(DAY + 1)  # the rolling window has passed: the identifier is free again
    send(client, customer, 1, identifier="dup")
    assert emu.totals()[0]["value"] == 2


def test_unknown_event_name(client: Any, customer: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(client, customer, event_name="nope")
    assert raised.value.code == "no_meter"


def test_inactive_meter_rejects_events(client: Any) -> None:
    meter = make_meter(client, event_name="old")
    customer = client.v1.customers.create({}).id
    client.v1.billing.meters.deactivate(meter.id)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(client, customer, event_name="old")
    assert raised.value.code == "archived_meter"


def test_unknown_and_missing_customer(client: Any, customer: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(client, "cus_unknown")
    assert raised.value.code == "meter_event_customer_not_found"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing.meter_events.create(
            {"event_name": "api_calls", "payload": {"value": "1"}}
        )
    assert raised.value.code == "meter_event_no_customer_defined"


@pytest.mark.parametrize("value", ["1.5", "abc", "", "1e3"])
def test_non_integer_value(client: Any, customer: str, value: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(client, customer, value)
    assert raised.value.code == "meter_event_invalid_value"


def test_custom_payload_keys(client: Any, emu: RunningEmulator) -> None:
    make_meter(
        client,
        event_name="tokens",
        customer_mapping={"event_payload_key": "acct", "type": "by_id"},
        value_settings={"event_payload_key": "n"},
    )
    customer = client.v1.customers.create({}).id
    client.v1.billing.meter_events.create(
        {"event_name": "tokens", "payload": {"acct": customer, "n": "9"}}
    )
    assert emu.totals()[0]["value"] == 9


def test_cancel_v1_and_v2(client: Any, emu: RunningEmulator, customer: str) -> None:
    send(client, customer, 10, identifier="a")
    send(client, customer, 20, identifier="b")
    adjustment = client.v1.billing.meter_event_adjustments.create(
        {"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "a"}}
    )
    assert (adjustment.object, adjustment.status) == ("billing.meter_event_adjustment", "pending")
    v2 = client.v2.billing.meter_event_adjustments.create(
        {"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "b"}}
    )
    assert v2.object == "v2.billing.meter_event_adjustment"
    assert emu.totals()[0] | {"customer": None, "meter": None} == {
        "customer": None, "meter": None, "event_name": "api_calls", "formula": "sum",
        "value": 0, "events": 0, "cancelled": 2,
    }  # fmt: skip


def test_cancel_after_24h_is_rejected(client: Any, emu: RunningEmulator, customer: str) -> None:
    send(client, customer, 10, identifier="late")
    emu.advance(DAY + 60)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing.meter_event_adjustments.create(
            {"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "late"}}
        )
    assert "24 hours" in str(raised.value.user_message)
    assert emu.totals()[0]["value"] == 10


def test_cancel_unknown_identifier(client: Any, customer: str) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_event_adjustments.create(
            {"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "nope"}}
        )
