"""Billing meters through both SDK styles."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from stripe_emulator.tests.helpers import make_meter


def test_create_retrieve_list_with_client(client: Any) -> None:
    meter = make_meter(
        client,
        customer_mapping={"event_payload_key": "account", "type": "by_id"},
        value_settings={"event_payload_key": "tokens"},
        event_time_window="hour",
    )
    assert meter.object == "billing.meter"
    assert meter.status == "active"
    assert meter.customer_mapping.event_payload_key == "account"
    assert meter.value_settings.event_payload_key == "tokens"
    assert meter.event_time_window == "hour"
    assert client.v1.billing.meters.retrieve(meter.id).event_name == "api_calls"
    listed = client.v1.billing.meters.list({"limit": 10})
    assert [m.id for m in listed.data] == [meter.id]


def test_defaults_match_stripe(client: Any) -> None:
    meter = make_meter(client, formula="count")
    assert meter.customer_mapping.event_payload_key == "stripe_customer_id"
    assert meter.customer_mapping.type == "by_id"
    assert meter.value_settings.event_payload_key == "value"
    assert meter.default_aggregation.formula == "count"


def test_deactivate_and_reactivate(client: Any) -> None:
    meter = make_meter(client)
    inactive = client.v1.billing.meters.deactivate(meter.id)
    assert inactive.status == "inactive"
    assert inactive.status_transitions.deactivated_at is not None
    assert [m.id for m in client.v1.billing.meters.list({"status": "inactive"}).data] == [meter.id]
    assert client.v1.billing.meters.reactivate(meter.id).status == "active"


def test_module_style(module_stripe: Any) -> None:
    meter = stripe.billing.Meter.create(
        display_name="Tokens", event_name="tokens", default_aggregation={"formula": "last"}
    )
    assert stripe.billing.Meter.retrieve(meter.id).default_aggregation.formula == "last"
    updated = stripe.billing.Meter.modify(meter.id, display_name="Tokens v2")
    assert updated.display_name == "Tokens v2"
    assert stripe.billing.Meter.deactivate(meter.id).status == "inactive"
    assert stripe.billing.Meter.reactivate(meter.id).status == "active"


def test_unknown_formula_is_rejected(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        make_meter(client, formula="max")
    assert raised.value.param == "default_aggregation[formula]"


def test_event_name_unique_among_active_meters(client: Any) -> None:
    first = make_meter(client)
    with pytest.raises(stripe.InvalidRequestError):
        make_meter(client)
    client.v1.billing.meters.deactivate(first.id)
    make_meter(client)  # free again once the first one is inactive
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meters.reactivate(first.id)


def test_missing_meter_is_404(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing.meters.retrieve("mtr_missing")
    assert raised.value.http_status == 404
    assert raised.value.code == "resource_missing"
